"""How torch.optim runs a step (foreach, fused, for-loop): the tensor ops of each
implementation against the ops torch itself dispatches (traced with a TorchDispatchMode on
CPU tensors), multi_tensor_apply launch counts by hand, and what the training pass charges."""

import numpy as np
import pytest

import sim
from sim.graph import Graph, TensorSpec
from sim.ops.optim import group_launches, mta_launches, torch_sequence
from sim.passes.training import training_graph

CASES = [  # (torch optimizer, its kwargs, our update op, our attrs)
    ("SGD", {"lr": 0.1}, "SGDUpdate", {"weight_decay": 0.0}),
    ("SGD", {"lr": 0.1, "weight_decay": 1e-4}, "SGDUpdate", {"weight_decay": 1e-4}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, "MomentumUpdate", {"weight_decay": 0.0}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}, "MomentumUpdate", {"weight_decay": 1e-4}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, "MomentumUpdate",
     {"weight_decay": 0.0, "nesterov": 1}),
    ("Adam", {"lr": 1e-3}, "AdamUpdate", {"weight_decay": 0.0}),
    ("Adam", {"lr": 1e-3, "weight_decay": 1e-2}, "AdamUpdate", {"weight_decay": 1e-2}),
    ("AdamW", {"lr": 1e-3, "weight_decay": 1e-2}, "AdamWUpdate", {"weight_decay": 1e-2}),
]


def _trace(torch, name, kwargs):
    """(op name, tensor-list arguments, out-of-place) of every op a second step dispatches on
    parameter-sized tensors (the 0-d step counters live on the host and launch nothing on a GPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    ops = []

    class Rec(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if any(t[0].dim() > 0 for t in lists) or any(t.dim() > 0 for t in tensors):
                ops.append((func.overloadpacket.__name__, len(lists) + len(tensors)))
            return func(*args, **(kwargs or {}))

    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    opt = getattr(torch.optim, name)(params, **kwargs)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        ops.clear()  # keep the second (steady-state) step
        with Rec():
            opt.step()
    return ops


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}{sorted(c[1])}")
def test_foreach_sequence_is_what_torch_dispatches(case):
    """Names in order; each op's passes = its tensor-list arguments read + the one written;
    its multi_tensor_apply depth = the lists it takes, + 1 for a new output list."""
    torch = pytest.importorskip("torch")
    name, kwargs, op, attrs = case
    traced = _trace(torch, name, {**kwargs, "foreach": True})
    assert [(n, k + 1, k + (0 if n.endswith("_") else 1)) for n, k in traced] == torch_sequence(op, attrs)
    loop = _trace(torch, name, {**kwargs, "foreach": False})
    assert len(loop) == 2 * len(torch_sequence(op, attrs))  # the same ops, per parameter (two here)


def test_fused_runs_one_kernel_over_param_grad_and_states():
    torch = pytest.importorskip("torch")
    assert _trace(torch, "SGD", {"lr": 0.1, "momentum": 0.9, "fused": True}) == [("_fused_sgd_", 3)]
    # params, grads, exp_avgs, exp_avg_sqs (multi_tensor_apply depth 4) and the step counters,
    # which a fused step keeps on the device (incremented by one more launch, 0-d, not traced here)
    assert _trace(torch, "AdamW", {"lr": 1e-3, "fused": True}) == [("_fused_adamw_", 5)]


def test_multi_tensor_apply_launches_by_hand():
    """4 KB kernel arguments, depth 2: at most 64 tensors and 320 blocks (chunks of 65536).
    300 + 30 chunks: the blocks fill at 320 inside the second tensor (launch 1), its last 10
    go out at the end (launch 2). 65 one-chunk tensors: the 64th fills the tensors (launch 1),
    the 65th goes at the end (launch 2). With 32 KB arguments (448 tensors, 2240 blocks) each
    fits in one launch."""
    c = 65536
    assert mta_launches([300 * c, 30 * c], 2, large_kernel_arg=False) == 2
    assert mta_launches([1] * 65, 2, large_kernel_arg=False) == 2
    assert mta_launches([300 * c, 30 * c], 2) == 1 and mta_launches([1] * 65, 2) == 1
    assert mta_launches([2240 * c], 1) == 1 and mta_launches([2240 * c + 1], 1) == 2
    assert mta_launches([0, 5], 1) == 1  # empty tensors are skipped


def _mlp():
    g = Graph("mlp")
    g.add_input("x", TensorSpec((8, 16)))
    g.add_param("w1", TensorSpec((16, 32)))
    g.add_param("b1", TensorSpec((32,)))
    g.add_param("w2", TensorSpec((32, 4)))
    g.add_node("MatMul", ["x", "w1"], ["h"])
    g.add_node("Add", ["h", "b1"], ["hb"])
    g.add_node("Relu", ["hb"], ["r"])
    g.add_node("MatMul", ["r", "w2"], ["y"])
    g.set_outputs(["y"])
    return g


@pytest.mark.parametrize("impl, kwargs, launches, passes", [
    ("foreach", {}, 3, 8),             # _foreach_mul_, _foreach_add_, _foreach_add_: one launch each
    ("fused", {"fused": True}, 1, 5),  # _fused_sgd_: read p, g, buf; write p, buf
    ("forloop", {"foreach": False}, 9, 8),  # the three ops for each of three parameters
    ("per_param", {"impl": "per_param"}, 3, 5),
])
def test_training_step_charges_the_implementation(impl, kwargs, launches, passes):
    t = training_graph(_mlp(), optimizer="sgd", momentum=0.9, **kwargs)
    ups = [n for n in t.nodes.values() if n.op == "MomentumUpdate"]
    assert {n.attrs["impl"] for n in ups} == {impl}
    works = [t.work(n) for n in ups]
    assert sum(w.launches for w in works) == pytest.approx(launches)
    n_params = 16 * 32 + 32 + 32 * 4
    step_reads = 8 * len(ups) if impl in ("fused", "per_param") else 0  # each node reads the int64 step
    assert sum(w.bytes for w in works) == passes * 4 * n_params + step_reads
    # the cost model charges each launch the spec's per-kernel floor
    from sim.cost.model import op_cost

    h100 = sim.hardware("h100")
    floors = sum(op_cost(w, h100, "fp32").launch_s for w in works)
    assert floors == pytest.approx(launches * h100.launch_s)


def test_group_launches_at_scale():
    """BERT-base-like group: 200 tensors, 110M elements (1,679 chunks if each were whole):
    the foreach Adam sequence is 7 ops, each one launch with 32 KB arguments."""
    numels = [550_000] * 200
    assert mta_launches(numels, 3) == 1  # 200 x 9 chunks = 1,800 blocks <= 2,240, 200 <= 336 tensors
    assert group_launches("AdamUpdate", {"impl": "foreach"}, numels) == 7
    assert group_launches("AdamUpdate", {"impl": "fused"}, numels) == 2  # _foreach_add_(steps) + _fused_adam_
    assert group_launches("AdamUpdate", {"impl": "forloop"}, numels) == 1400


def test_values_do_not_depend_on_the_implementation():
    from sim.training import Trainer

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    losses = {}
    for impl in ("foreach", "fused", "forloop"):
        tr = Trainer(_mlp(), optimizer="adam", seed=1, impl=impl)
        losses[impl] = [tr.step(x, y) for _ in range(3)]
    assert losses["foreach"] == losses["fused"] == losses["forloop"]


def test_bad_impl_is_refused():
    with pytest.raises(sim.GraphError, match="unknown optimizer impl"):
        training_graph(_mlp(), optimizer="adam", impl="apex")
    with pytest.raises(sim.GraphError, match="fused=True and foreach=True"):
        training_graph(_mlp(), optimizer="adam", fused=True, foreach=True)


def test_training_step_loss_runs_as_f_cross_entropy():
    """F.cross_entropy in a torch step: _log_softmax + nll_loss_forward (2 kernels), and
    backward ones_like + nll_loss_backward (a zero-fill of the [N, C] gradient and a scatter
    on CUDA) + _log_softmax_backward_data: 4. The MLP's torch step, traced, has the same
    ATen ops; bytes by hand for N = 8 rows of C = 4 classes in fp32 (labels int64)."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch_nets import VIEWS

    t = training_graph(_mlp(), optimizer="sgd")
    fwd, bwd = t.nodes["loss"], next(n for n in t.nodes.values() if n.op == "SoftmaxCrossEntropyLossGrad")
    wf, wb = t.work(fwd), t.work(bwd)
    assert (wf.launches, wb.launches) == (2, 4)
    nc = 8 * 4 * 4
    assert (wf.bytes_read, wf.bytes_written) == (nc + 8 * 8, nc + 4)  # scores, labels; log-probs, loss
    assert (wb.bytes_read, wb.bytes_written) == (2 * nc + 8 * 8, 2 * nc)
    seen = []

    class Rec(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ not in VIEWS:
                seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    logits, labels = torch.randn(8, 4, requires_grad=True), torch.randint(0, 4, (8,))
    with Rec():
        torch.nn.functional.cross_entropy(logits, labels).backward()
    assert seen == ["_log_softmax", "nll_loss_forward", "ones_like", "nll_loss_backward",
                    "_log_softmax_backward_data"]

"""Parallelism passes: data, tensor (Megatron-LM) and GPipe pipeline parallelism over several
devices.

The passes turn a graph into a bigger graph whose nodes carry ``meta["device"]``, so
``sim.simulate`` places them, copies tensors between devices over the system's links, and
times collectives as link flows (``sim/engine/collectives.py``). The result still executes
on NumPy (``sim.exec``): a replicated graph computes what the separate devices would.

* ``data_parallel(train_graph, devices)``: ``train_graph`` is one replica's training step
  (``sim.passes.training.training_graph``) built at the per-device batch (the global batch
  divided by the number of devices). Every node is replicated once per device (node
  ``<device>/<name>``, tensor ``<device>/<tensor>``, graph input ``<device>/<input>``);
  parameters and optimizer states keep their names and are resident on every device. Each
  gradient feeds one ``AllReduce`` (``reduction="mean"``, ring over ``devices``) before its
  optimizer updates, so every replica applies the same averaged gradient, which equals the
  gradient of the mean loss over the global batch. Gradients are all-reduced in DDP-style
  buckets (25 MiB by default, ``bucket_bytes``).
* ``tensor_parallel(graph, devices)``: Megatron-LM's split of a forward transformer graph
  (attention by heads, MLP column- then row-wise, one sum AllReduce after each row-parallel
  linear; everything else replicated).
* ``pipeline_parallel(graph, stages, microbatches)``: ``graph`` is a forward graph or a
  training step built at the microbatch size (a training step accumulates the microbatch
  gradients and updates once; see the function). Its nodes (in topological order) are cut
  into ``len(stages)`` contiguous stages of about equal FLOPs, stage ``s`` placed on
  ``stages[s]``, and the graph
  is replicated per microbatch (node ``mb<j>/<name>``). Each tensor entering stage ``s`` for
  microbatch ``j > 0`` passes through a ``Depend`` on the last output of stage ``s`` for
  microbatch ``j - 1`` (zero work, in place), so each device takes the microbatches in
  order: the GPipe schedule. Activations cross stage boundaries as ordinary copies. With
  balanced stages of time ``t`` and free copies the makespan is ``(m + S - 1) t`` for ``m``
  microbatches and ``S`` stages, and the idle fraction of the stage devices (the bubble,
  ``bubble_fraction``) is ``(S - 1)/(m + S - 1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sim.errors import GraphError
from sim.graph import Graph, Node
from sim.passes.pipeline import Pipeline, lane
from sim.passes.tensor_parallel import tensor_parallel


def _check_devices(devices: Sequence[str], what: str) -> list[str]:
    devs = [str(d) for d in devices]
    if not devs:
        raise GraphError(f"{what} needs at least one device", where=what)
    if len(set(devs)) != len(devs):
        raise GraphError(f"{what}: devices repeat: {devs}", where=what)
    return devs


def _batch(g: Graph) -> int | None:
    from sim.graph.batch import infer_batch

    return infer_batch(g)


DDP_BUCKET_BYTES = 25 * 2**20  # PyTorch DDP bucket_cap_mb=25


def data_parallel(train_graph: Graph, devices: Sequence[str] | Sequence[Mapping[str, str]], *,
                  reduction: str = "mean", bucket_bytes: int | None = DDP_BUCKET_BYTES) -> Graph:
    """Replicate a training step over ``devices`` with an AllReduce on every gradient.

    A step already placed by tensor/pipeline parallelism is replicated by
    ``sim.passes.data_parallel_placed`` instead: ``devices[r]`` is then a mapping from each of
    its devices to replica ``r``'s (one all-reduce per rank gradient, no buckets).

    ``train_graph``: one replica's step at the per-device batch (``graph.meta["grads"]``
    names the gradient of each parameter, as ``training_graph`` records it). ``reduction``:
    ``"mean"`` (default; the replicas' losses are means over their shards) or ``"sum"``.
    The new graph's ``meta``: ``"replicas"`` (the devices), ``"batch"`` (the global batch),
    ``"allreduce"`` (parameter -> AllReduce node name), ``"updates"`` and ``"loss"`` for the
    first replica (all replicas hold the same values after a step).

    Gradient bucketing (PyTorch DDP): gradients join a bucket (one per dtype) in the order
    the backward pass produces them (the reverse of the parameters' forward order); a
    bucket closes once it holds ``bucket_bytes`` (default 25 MiB, in the graph's dtypes)
    or when a node needs one of its gradients. Each replica flattens and concatenates a
    bucket's gradients (``Concat``), one ``AllReduce`` (``<first param>.bucket``) reduces
    the flat buffer, and ``Split`` + ``Reshape`` give each gradient back; a bucket of one
    gradient is all-reduced as it is (``<param>.allreduce``). So all-reduces start while
    the rest of the backward pass runs. ``bucket_bytes=None`` (or 0): one all-reduce per
    gradient. ``meta["buckets"]``: the parameters of each bucket, in order.

    >>> from sim.graph import Graph, TensorSpec
    >>> from sim.passes.training import training_graph
    >>> g = Graph("lin"); _ = g.add_input("x", TensorSpec((4, 3)))
    >>> _ = g.add_param("w", TensorSpec((3, 2))); _ = g.add_node("MatMul", ["x", "w"], ["y"])
    >>> g.set_outputs(["y"])
    >>> dp = data_parallel(training_graph(g, "mse"), ["gpu0", "gpu1"])
    >>> ar = dp.nodes["w.allreduce"]
    >>> ar.op, ar.attrs["group"], ar.outputs
    ('AllReduce', ['gpu0', 'gpu1'], ('gpu0/matmul.grad_4.reduced', 'gpu1/matmul.grad_4.reduced'))
    """
    if any("device" in nd.meta for nd in train_graph.nodes.values()):
        from sim.passes.data_parallel_placed import data_parallel_placed

        return data_parallel_placed(train_graph, devices, reduction=reduction)  # type: ignore[arg-type]
    devs = _check_devices(devices, "data_parallel")  # type: ignore[arg-type]
    grads: dict[str, str] = dict(train_graph.meta.get("grads") or {})
    if not grads:
        raise GraphError("data_parallel needs a training graph (meta['grads'] from training_graph)",
                         where=train_graph.source or train_graph.name)
    from sim.passes.data_parallel import Replicas

    out = Replicas(train_graph, devs, reduction, bucket_bytes).run()
    b = _batch(train_graph)
    if b is not None:
        out.meta["batch"] = b * len(devs)
    return out.verify()


def stage_split(graph: Graph, n_stages: int, weight: Callable[[Node], float] | None = None,
                nodes: Sequence[Node] | None = None) -> dict[str, int]:
    """Node name -> stage (0..n_stages-1): contiguous runs of the topological order (of
    ``nodes``, default all) with about equal total weight (FLOPs by default). A node goes to
    the stage its weight's midpoint falls in, so equal-weight nodes split evenly."""
    if n_stages < 1:
        raise GraphError(f"need at least one stage, got {n_stages}", where="pipeline_parallel")
    order = list(graph.topo_order() if nodes is None else nodes)
    w = [float(weight(nd)) if weight else float(graph.work(nd).flops) for nd in order]
    total = sum(w)
    out: dict[str, int] = {}
    acc = 0.0
    for i, (node, wi) in enumerate(zip(order, w)):
        if total > 0:
            s = int((acc + wi / 2) / total * n_stages)
        else:
            s = i * n_stages // max(len(order), 1)
        out[node.name] = min(max(s, 0), n_stages - 1)
        acc += wi
    return out


def _training_stages(graph: Graph, order: list[Node], split: dict[str, int], n: int) -> dict[str, int]:
    """Stages of a training graph's other nodes: loss on the last stage, backward and
    recompute nodes with their forward node, the rest with the producer of their first input."""
    stage = dict(split)
    for node in order:
        if node.name in stage:
            continue
        s: int | None = None
        if node.meta.get("role") == "loss":
            s = n - 1
        for key in ("forward", "recompute"):
            ref = node.meta.get(key)
            if s is None and ref in stage:
                s = stage[ref]
        if s is None:
            for t in node.inputs:
                prod = graph.producer(t) if t else None
                if prod is not None and prod.name in stage:
                    s = stage[prod.name]
                    break
        stage[node.name] = n - 1 if s is None else s
    return stage


def _split_by_origin(graph: Graph, n: int, weight: Callable[[Node], float] | None,
                     nodes: list[Node]) -> dict[str, int]:
    """``stage_split`` of ``nodes``, where the tensor-parallel copies of one source node
    (``meta["origin"]``) share a stage: the split runs over rank 0's copies."""
    if not any("origin" in nd.meta for nd in nodes):
        return stage_split(graph, n, weight, nodes)
    lead = [nd for nd in nodes if "origin" in nd.meta and nd.meta.get("tp_rank", 0) == 0]
    by_origin = {lead_nd.meta["origin"]: s for lead_nd, s in
                 zip(lead, stage_split(graph, n, weight, lead).values())}
    return {nd.name: by_origin[nd.meta["origin"]] for nd in nodes if nd.meta.get("origin") in by_origin}


def pipeline_parallel(graph: Graph, stages: Sequence[str] | Sequence[Sequence[str]], microbatches: int, *,
                      weight: Callable[[Node], float] | None = None) -> Graph:
    """GPipe: cut ``graph`` (built at the microbatch size) into ``len(stages)`` FLOP-balanced
    contiguous stages on ``stages`` and replicate it ``microbatches`` times.

    A forward graph is split as a whole. A training step (``training_graph``) is split by its
    forward nodes; the loss goes to the last stage, each backward (and recompute) node to its
    forward node's stage. Its optimizer nodes are not replicated: each parameter's gradient
    is the mean over the microbatches (gradient accumulation, ``<param>.grad_acc``, on the
    stage that produces it), updated once, so the step equals one step on the whole batch;
    each stage updates its parameters as soon as its own accumulated gradients exist (the
    step counter's wait for the whole backward pass is dropped: it would copy every gradient
    to one device).
    ``weight(node)`` replaces FLOPs as the balancing measure. Node meta gets ``device``,
    ``stage`` and ``microbatch``; the graph's meta ``"stages"`` (node -> stage),
    ``"microbatches"``, ``"stage_devices"``, ``"batch"`` (microbatches x microbatch size)
    and, for training, ``"losses"`` (one per microbatch).

    >>> from sim.graph import Graph, TensorSpec
    >>> g = Graph("two"); _ = g.add_input("x", TensorSpec((2, 4)))
    >>> _ = g.add_node("Relu", ["x"], ["a"], name="A"); _ = g.add_node("Relu", ["a"], ["b"], name="B")
    >>> g.set_outputs(["b"])
    >>> p = pipeline_parallel(g, ["gpu0", "gpu1"], 2)
    >>> [(n.name, n.meta["device"]) for n in p.topo_order() if n.op == "Relu"]
    [('mb0/A', 'gpu0'), ('mb0/B', 'gpu1'), ('mb1/A', 'gpu0'), ('mb1/B', 'gpu1')]
    >>> p.nodes["mb1/B"].inputs  # held until gpu1 is done with microbatch 0
    ('mb1/a.stage1',)
    """
    groups = [[str(d)] if isinstance(d, str) else [str(x) for x in d] for d in stages]
    _check_devices([d for grp in groups for d in grp], "pipeline_parallel")
    devs = [grp[0] for grp in groups]
    tp = list(graph.meta.get("tp_devices") or [None])
    if any(len(grp) != len(tp) for grp in groups):
        raise GraphError(f"each stage needs one device per tensor-parallel rank ({len(tp)})",
                         where="pipeline_parallel")
    if "replicas" in graph.meta:
        raise GraphError("pipeline_parallel cannot split a data-parallel graph: apply it before "
                         "data parallelism (dp(pp(tp(g))))", where="pipeline_parallel")
    if microbatches < 1:
        raise GraphError(f"microbatches must be >= 1, got {microbatches}", where="pipeline_parallel")
    stage, phase, replicated = _pipeline_plan(graph, len(devs), weight)
    out = Pipeline(graph, stage, phase, replicated, _placer(groups, tp), microbatches, len(devs)).run()
    out.meta.update({"stages": stage, "microbatches": microbatches, "stage_devices": devs})
    b = _batch(graph)
    if b is not None:
        out.meta["batch"] = b * microbatches
    return out.verify()


def _pipeline_plan(graph: Graph, n: int, weight: Callable[[Node], float] | None
                   ) -> tuple[dict[str, int], dict[str, str], list[Node]]:
    """Node -> stage, node -> phase (``f``/``b``) and the nodes replicated per microbatch (all
    but a training step's optimizer nodes)."""
    order = graph.topo_order()
    if graph.meta.get("grads"):
        from sim.passes.training import forward_node_names

        fwd_names = set(forward_node_names(graph))
        forward = [nd for nd in order if nd.name in fwd_names]
        replicated = [nd for nd in order if nd.meta.get("role") != "optimizer"]
        phase = {nd.name: "f" if nd.name in fwd_names or nd.meta.get("role") == "loss" else "b"
                 for nd in replicated}
    else:
        forward = replicated = list(order)
        phase = {nd.name: "f" for nd in order}
    return _training_stages(graph, order, _split_by_origin(graph, n, weight, forward), n), phase, replicated


def _placer(groups: list[list[str]], tp: list[Any]) -> Callable[[Node, int], tuple[str, dict[str, Any]]]:
    """(node, stage) -> (device, attrs): the stage's device for the node's tensor-parallel
    rank, and a collective's group mapped onto the stage's devices."""
    def place(node: Node, s: int) -> tuple[str, dict[str, Any]]:
        attrs = dict(node.attrs)
        if "group" in attrs and tp != [None]:
            attrs["group"] = [groups[s][tp.index(d)] for d in attrs["group"]]
        return groups[s][lane(node)], attrs
    return place


def bubble_fraction(result: Any, devices: Sequence[str]) -> float:
    """Idle fraction of ``devices``' compute over the makespan: 1 - busy / (devices x makespan).

    Busy time is the union of each device's compute records (transfers and collectives,
    which run on copy engines, are not compute)."""
    devs = list(devices)
    if not devs or result.makespan_s <= 0:
        return 0.0
    busy = 0.0
    for d in devs:
        spans = sorted((r.start_s, r.end_s) for r in result.ops
                       if r.device == d and r.op != "Transfer" and r.bound != "comm")
        end = float("-inf")
        for a, b in spans:
            if b <= end:
                continue
            busy += b - max(a, end)
            end = b
    return 1.0 - busy / (len(devs) * result.makespan_s)


def parse_parallel(spec: str) -> tuple[str, int, int]:
    """``"dp=8"`` -> ``("dp", 8, 1)``; ``"tp=8"`` -> ``("tp", 8, 1)``; ``"pp=4,mb=16"`` ->
    ``("pp", 4, 16)`` (``mb`` defaults to the number of stages). SpecError on anything else."""
    from sim.errors import SpecError

    fields: dict[str, int] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("dp", "tp", "pp", "mb") or key in fields:
            raise SpecError(f"expected dp=N, tp=N or pp=S[,mb=M], got {spec!r}", where="--parallel")
        try:
            fields[key] = int(value)
        except ValueError:
            raise SpecError(f"{key} needs an integer, got {value.strip()!r}", where="--parallel") from None
        if fields[key] < 1:
            raise SpecError(f"{key} must be >= 1, got {fields[key]}", where="--parallel")
    kinds = [k for k in ("dp", "tp", "pp") if k in fields]
    if len(kinds) != 1 or ("mb" in fields and kinds[0] != "pp"):
        raise SpecError(f"expected dp=N, tp=N or pp=S[,mb=M], got {spec!r}", where="--parallel")
    kind = kinds[0]
    return kind, fields[kind], fields.get("mb", fields[kind]) if kind == "pp" else 1


def parallel_graph(spec: str, load: Callable[[int | None], Graph],
                   prepare: Callable[[Graph], Graph] | None, devices: Sequence[str]) -> Graph:
    """The graph ``sim run --parallel SPEC`` simulates.

    ``load(batch)`` loads the workload (``None``: at its own batch, the global one);
    ``prepare`` makes the training step (and fuses) or is None; ``devices`` are the system's
    accelerators, the first N (or S) of which are used. ``dp=N`` rebuilds the workload at
    ``batch / N`` and replicates the training step (``prepare`` required); ``pp=S,mb=M``
    rebuilds it at ``batch / M`` and pipelines it over S devices; ``tp=N`` splits the forward
    graph (at the whole batch; ``prepare`` must not make a training step) over N devices.
    """
    from sim.errors import SpecError

    kind, count, micro = parse_parallel(spec)
    devs = list(devices)
    if count > len(devs):
        raise SpecError(f"{kind}={count} needs {count} devices, the system has {len(devs)}",
                        where="--parallel")
    if kind == "tp":
        g = load(None)
        if prepare is not None:
            g = prepare(g)
        if g.meta.get("grads"):
            raise SpecError("tp splits the forward pass only (drop --train)", where="--parallel")
        try:
            return tensor_parallel(g, devs[:count])
        except GraphError as e:
            raise SpecError(f"tp={count}: {e.message}",
                            where="--parallel") from None
    batch = _batch(load(None))
    parts = count if kind == "dp" else micro
    if batch is None or batch % parts:
        raise SpecError(f"the batch ({batch}) does not split into {parts} equal parts", where="--parallel")
    g = load(batch // parts)
    if prepare is not None:
        g = prepare(g)
    if kind == "dp":
        if not g.meta.get("grads"):
            raise SpecError("dp needs a training step (add --train)", where="--parallel")
        return data_parallel(g, devs[:count])
    return pipeline_parallel(g, devs[:count], micro)

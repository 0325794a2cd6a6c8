"""Memory per GPU of a 3-D parallel training step, by component.

Bytes per parameter (``P`` the parameters a rank holds, ``d`` the ZeRO/data-parallel degree):

==============  =================  ====================  ==========================
precision       weights            gradients             optimizer (Adam)
==============  =================  ====================  ==========================
mixed (AMP)     2 (bf16/fp16)      4 (fp32 main grads)   12: fp32 master + m + v
pure ``dtype``  itemsize           itemsize              2 x itemsize (m, v)
==============  =================  ====================  ==========================

so mixed precision with Adam is 18 B/param (Megatron-LM's count; 16 when gradients are kept
in bf16). ZeRO-1 divides the optimizer states by ``d``, ZeRO-2 also the gradients, ZeRO-3
also the weights (plus two layers' gathered weights: in use and prefetched). SGD has no states, momentum one.

Activations: the saved bytes of one layer for one microbatch (from the graph, or the
Korthikanti et al. 2022 count ``s b h (10 + 24/t)`` without the ``s^2`` attention terms that a
fused attention kernel does not store, when no graph is at hand) times the layers of a chunk
times the chunk-forwards in flight under the schedule (``schedule.max_in_flight``). With full
recomputation a layer keeps only its input (``s b h`` elements) and one layer's full
activations are live during its backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.cluster.layout import Layout
from sim.cluster.schedule import max_in_flight, task_order
from sim.errors import OutOfMemoryError

STATES = {"adam": 2, "adamw": 2, "momentum": 1, "sgd": 0}


@dataclass
class RankMemory:
    """One distinct rank's memory (bytes) by component."""

    rank: str
    components: dict[str, float] = field(default_factory=dict)
    capacity: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.components.values())


def param_bytes(optimizer: str, amp: bool, itemsize: int) -> tuple[float, float, float]:
    """(weights, gradients, optimizer states) bytes per parameter, before ZeRO sharding."""
    states = STATES.get(optimizer, 2)
    if amp:
        return 2.0, 4.0, 4.0 + 4.0 * states  # fp32 master weights + fp32 states
    return float(itemsize), float(itemsize), float(itemsize * states)


def rank_memory(
    rank: str,
    params: float,
    layout: Layout,
    *,
    optimizer: str,
    amp: bool,
    itemsize: int,
    act_per_layer: float,
    layer_input: float,
    layers_per_chunk: int,
    in_flight: int,
    extra_act: float,
    recompute: bool,
    chunk_params: float,
    capacity: float,
) -> RankMemory:
    """The memory of one rank holding ``params`` parameters (see the module docstring)."""
    w, g, o = param_bytes(optimizer, amp, itemsize)
    d = layout.dp
    comps: dict[str, float] = {}
    comps["weights"] = params * w / (d if layout.zero >= 3 else 1)
    if layout.zero >= 3:
        comps["gathered weights"] = 2 * chunk_params * w  # the layer in use and the one prefetched
    comps["gradients"] = params * g / (d if layout.zero >= 2 else 1)
    comps["optimizer states"] = params * o / (d if layout.zero >= 1 else 1)
    if recompute:
        comps["activations"] = in_flight * layers_per_chunk * layer_input + act_per_layer + extra_act
    else:
        comps["activations"] = in_flight * layers_per_chunk * act_per_layer + extra_act
    return RankMemory(rank, comps, capacity)


def in_flight(layout: Layout, stage: int, microbatches: int) -> int:
    """Chunk-forwards whose activations stage ``stage`` holds at its peak under the schedule."""
    return max_in_flight(task_order(layout.schedule, layout.pp, stage, microbatches, layout.chunks))


def formula_activation(seq: int, mbs: int, hidden: int, tp: int, sp: bool, act_bytes: int = 2) -> float:
    """Saved bytes of one transformer layer for one microbatch, Korthikanti et al. 2022 (eq. 2-4)
    with a fused attention kernel (no ``s^2`` terms) and no dropout masks:
    ``s b h (10 + 24/t)`` bytes at 2 B per element, ``s b h 34/t`` with sequence parallelism."""
    sbh = seq * mbs * hidden * act_bytes / 2
    return sbh * (34 / tp if sp else 10 + 24 / tp)


def check_fits(mems: list[RankMemory]) -> None:
    """Raise ``OutOfMemoryError`` naming the first rank and the largest component that overflow."""
    for m in mems:
        if m.capacity and m.total > m.capacity:
            comp = max(m.components, key=lambda k: m.components[k])
            err = OutOfMemoryError(
                m.rank, comp, m.total, m.capacity - (m.total - m.components[comp]), m.capacity
            )
            parts = ", ".join(f"{k} {v / 2**30:.1f}" for k, v in m.components.items())
            err.args = (
                f"out of memory on {m.rank}: needs {m.total / 2**30:.1f} GiB of "
                f"{m.capacity / 2**30:.0f} GiB; largest component {comp} ({parts} GiB)",
            )
            raise err

"""Placing a network's LIF layers on cores.

A *slice* is a contiguous range of one layer's neurons (rows of its weight matrix). A core holds
one or more slices; the mapper walks the neurons of all LIF layers in order (layer 1 first) and
cuts that sequence into ``cores`` contiguous pieces of nearly equal synapse count, so

- a layer larger than a core is split by neurons over a group of consecutive cores,
- small neighbouring layers may share a core (one core then holds the end of one layer and the
  start of the next, and runs them one after the other),
- work is balanced: a core's forward, backward and update work all grow with its synapses.

The cut never changes a number the model computes (docs/arithmetic.md, "Multi-core"): spikes are
neuron-local, cores exchange *unrounded* error partial sums that add exactly, and each core's
stochastic-rounding draws are the one-core stream's draws at its own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spikeforge.config import SpikeforgeConfig

__all__ = ["MappingError", "Slice", "Placement", "place", "place_by_layer", "place_pipeline", "place_config"]


class MappingError(ValueError):
    """The network cannot be placed on the cores asked for; the message says what to change."""


@dataclass(frozen=True)
class Slice:
    """Neurons ``lo .. hi-1`` of LIF layer ``layer`` (0 = the first LIF layer)."""

    layer: int
    lo: int
    hi: int
    fan_in: int

    @property
    def neurons(self) -> int:
        return self.hi - self.lo

    @property
    def synapses(self) -> int:
        return self.neurons * self.fan_in

    def __str__(self) -> str:
        return f"L{self.layer + 1}[{self.lo}:{self.hi}]"


@dataclass(frozen=True)
class Placement:
    """Which slices each core holds, in the order the core runs them (layer order)."""

    layers: tuple[int, ...]  # network.layers: inputs, then one size per LIF layer
    cores: tuple[tuple[Slice, ...], ...]

    @property
    def n_cores(self) -> int:
        return len(self.cores)

    def slices_of_layer(self, layer: int) -> list[tuple[int, Slice]]:
        """(core, slice) pairs covering LIF layer ``layer``, in neuron order."""
        return [(c, s) for c, held in enumerate(self.cores) for s in held if s.layer == layer]

    def cores_of_layer(self, layer: int) -> list[int]:
        return [c for c, _ in self.slices_of_layer(layer)]

    def core_of_neuron(self, layer: int, neuron: int) -> int:
        for c, s in self.slices_of_layer(layer):
            if s.lo <= neuron < s.hi:
                return c
        raise IndexError(f"layer {layer} has no neuron {neuron}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "cores": [
                {"core": c, "slices": [{"layer": s.layer + 1, "lo": s.lo, "hi": s.hi} for s in held],
                 "neurons": sum(s.neurons for s in held), "synapses": sum(s.synapses for s in held)}
                for c, held in enumerate(self.cores)
            ],
        }

    def describe(self) -> str:
        """A table a person can read: one line per core."""
        lines = [f"{'core':>4}  {'neurons':>7}  {'synapses':>8}  slices"]
        for c, held in enumerate(self.cores):
            lines.append(
                f"{c:>4}  {sum(s.neurons for s in held):>7}  {sum(s.synapses for s in held):>8}  "
                + " ".join(str(s) for s in held)
            )
        return "\n".join(lines)


def place(layers: tuple[int, ...] | list[int], cores: int, core_neurons: int, core_synapses: int,
          neuron_cost: list[int] | None = None, align: int = 1) -> Placement:
    """Cut the LIF neurons of ``layers`` into ``cores`` contiguous pieces of balanced cost.

    The cost of a neuron is its layer's fan-in (synapses) unless ``neuron_cost`` gives one integer
    per LIF layer: a profile of cycles per neuron (``spikeforge bench scaling`` measures it on one
    core), which balances the engines' work rather than the weight memories."""
    layers = tuple(layers)
    if len(layers) < 2:
        raise MappingError(f"network.layers = {list(layers)}: need the input size and at least one LIF layer")
    if not 1 <= cores <= 20:
        raise MappingError(f"hardware.cores = {cores}: a spikeforge accelerator has 1 to 20 cores")
    fan_ins = [layers[k] for k in range(len(layers) - 1)]
    sizes = list(layers[1:])
    total_neurons = sum(sizes)
    if cores > total_neurons:
        raise MappingError(
            f"hardware.cores = {cores} but the network has only {total_neurons} LIF neurons; every core needs one"
        )
    if neuron_cost is not None:
        if len(neuron_cost) != len(sizes) or any(not isinstance(c, int) or c < 1 for c in neuron_cost):
            raise MappingError(f"neuron_cost must give one integer >= 1 per LIF layer ({len(sizes)}), got {neuron_cost}")
    cost = list(neuron_cost) if neuron_cost is not None else fan_ins
    # cumulative cost at each neuron boundary of the flattened sequence
    weight = [cost[l] for l, n in enumerate(sizes) for _ in range(n)]
    cum = [0]
    for w in weight:
        cum.append(cum[-1] + w)
    total = cum[-1]
    cuts = [0]
    for k in range(1, cores):
        target = (k * total + cores // 2) // cores
        # first boundary at or past the target, but leave at least one neuron for each core
        i = next(i for i in range(len(cum)) if cum[i] >= target)
        if align > 1:
            l = max(j for j in range(len(sizes)) if sum(sizes[:j]) <= i)
            first = sum(sizes[:l])
            off = min(sizes[l], ((i - first + align // 2) // align) * align)
            i = first + off
        i = max(i, cuts[-1] + 1)
        i = min(i, total_neurons - (cores - k))
        cuts.append(i)
    cuts.append(total_neurons)
    starts = [sum(sizes[:l]) for l in range(len(sizes))]
    held: list[tuple[Slice, ...]] = []
    for c in range(cores):
        a, b = cuts[c], cuts[c + 1]
        out = []
        for l, n in enumerate(sizes):
            lo, hi = max(a, starts[l]), min(b, starts[l] + n)
            if lo < hi:
                out.append(Slice(l, lo - starts[l], hi - starts[l], fan_ins[l]))
        held.append(tuple(out))
    placement = Placement(layers, tuple(held))
    _check_capacity(placement, core_neurons, core_synapses, need=max(-(-total // core_synapses),
                                                                       -(-total_neurons // core_neurons)))
    return placement


def place_by_layer(layers: tuple[int, ...] | list[int], cores: int, core_neurons: int, core_synapses: int,
                   align: int = 1, neuron_cost: list[int] | tuple[int, ...] | None = None) -> Placement:
    """Layer-aligned placement, the one the multi-core RTL runs (rtl/multicore.py): a core holds
    either one slice of one layer or whole consecutive layers, never the end of one layer and the
    start of the next.

    A layer's work is its neurons times ``neuron_cost`` of the layer (a profile of cycles per
    neuron; default its fan-in, i.e. its synapses). With at least one core per LIF layer, every
    layer gets a group of cores of its own, in proportion to its work, and is cut into nearly
    equal slices at multiples of ``align``. With fewer cores, consecutive whole layers share a core
    (the grouping with the least work on the busiest core). The layer groups are the stages of
    the pipeline samples run through, so balancing work balances the stages."""
    layers = tuple(layers)
    if len(layers) < 2:
        raise MappingError(f"network.layers = {list(layers)}: need the input size and at least one LIF layer")
    sizes, fan_ins = list(layers[1:]), list(layers[:-1])
    n = len(sizes)
    if not 1 <= cores <= 20:
        raise MappingError(f"hardware.cores = {cores}: a spikeforge accelerator has 1 to 20 cores")
    total = sum(s * f for s, f in zip(sizes, fan_ins))
    need = max(-(-total // core_synapses), -(-sum(sizes) // core_neurons))
    if neuron_cost:
        if len(neuron_cost) != n or any(not isinstance(c, int) or c < 1 for c in neuron_cost):
            raise MappingError(f"hardware.neuron_cost must give one integer >= 1 per LIF layer ({n}), got {list(neuron_cost)}")
    cost = list(neuron_cost) if neuron_cost else fan_ins
    work = [s * c for s, c in zip(sizes, cost)]
    if cores < n:
        import itertools

        best = min(itertools.combinations(range(1, n), cores - 1),
                   key=lambda cuts: max(sum(work[a:b]) for a, b in zip((0, *cuts), (*cuts, n))))
        held = [tuple(Slice(l, 0, sizes[l], fan_ins[l]) for l in range(a, b))
                for a, b in zip((0, *best), (*best, n))]
        placement = Placement(layers, tuple(held))
        _check_capacity(placement, core_neurons, core_synapses, need)
        return placement
    most = [-(-size // align) for size in sizes]  # slices a layer can be cut into at aligned cuts
    if cores > sum(most):
        raise MappingError(f"hardware.cores = {cores} but the layers {sizes} give at most {sum(most)} slices "
                           f"of {align} neurons (hardware.lanes)")
    share = [1] * n
    for _ in range(cores - n):  # the next core to the layer whose cores carry the most work each
        l = max((l for l in range(n) if share[l] < most[l]), key=lambda l: (work[l] / share[l], -l))
        share[l] += 1
    held = []
    for l, (size, k) in enumerate(zip(sizes, share)):
        groups = most[l]
        cuts = [min(size, (i * groups // k) * align) for i in range(k)] + [size]
        held += [(Slice(l, lo, hi, fan_ins[l]),) for lo, hi in zip(cuts, cuts[1:])]
    placement = Placement(layers, tuple(held))
    _check_capacity(placement, core_neurons, core_synapses, need)
    return placement


def place_pipeline(layers: tuple[int, ...] | list[int], cores: int, core_neurons: int, core_synapses: int,
                   align: int = 1, neuron_cost: list[int] | tuple[int, ...] | None = None) -> Placement:
    """The placement the multi-core RTL runs: the LIF neurons, in layer order, cut into ``cores``
    contiguous pieces at multiples of ``align`` (a core's neuron groups), so that the busiest core
    carries the least work. A piece is one slice of one layer, whole consecutive layers, or the end
    of one layer and the start of the next (a *cross* core: the layer-aligned cuts of
    :func:`place_by_layer` leave a layer's cores unevenly loaded whenever its groups do not divide
    among them, and the cross cut moves the remainder to the neighbouring layer). The output layer
    stays on one core (its readout decides the class).

    Work is neurons times ``neuron_cost`` of the layer (default its fan-in). Among the cuts with
    the least work on the busiest core, the one with the fewest cross cores, then the evenest
    (least sum of squared work), wins; so a count where layer-aligned cuts are as good gets them."""
    layers = tuple(layers)
    if len(layers) < 2:
        raise MappingError(f"network.layers = {list(layers)}: need the input size and at least one LIF layer")
    if not 1 <= cores <= 20:
        raise MappingError(f"hardware.cores = {cores}: a spikeforge accelerator has 1 to 20 cores")
    sizes, fan_ins = list(layers[1:]), list(layers[:-1])
    n = len(sizes)
    if neuron_cost:
        if len(neuron_cost) != n or any(not isinstance(c, int) or c < 1 for c in neuron_cost):
            raise MappingError(f"hardware.neuron_cost must give one integer >= 1 per LIF layer ({n}), got {list(neuron_cost)}")
    cost = list(neuron_cost) if neuron_cost else fan_ins
    total_syn = sum(s * f for s, f in zip(sizes, fan_ins))
    need = max(-(-total_syn // core_synapses), -(-sum(sizes) // core_neurons))
    # units: aligned groups of one layer, in order; the output layer is one unit (never cut)
    units = []  # (layer, lo, hi)
    for l, size in enumerate(sizes):
        step = size if l == n - 1 else align
        units += [(l, lo, min(size, lo + step)) for lo in range(0, size, step)]
    N = len(units)
    if cores > N:
        raise MappingError(f"hardware.cores = {cores} but the layers {sizes} give at most {N} slices of {align} "
                           f"neurons (hardware.lanes; the output layer stays whole)")
    first = {i for i in range(N) if units[i][1] == 0}  # units that start a layer
    last = {i + 1 for i in range(N) if units[i][2] == sizes[units[i][0]]}  # ends of units that end one
    pre_w, pre_n, pre_s = [0], [0], [0]
    for l, lo, hi in units:
        pre_w.append(pre_w[-1] + (hi - lo) * cost[l])
        pre_n.append(pre_n[-1] + hi - lo)
        pre_s.append(pre_s[-1] + (hi - lo) * fan_ins[l])

    def kind(i: int, j: int) -> str | None:
        """'slice', 'whole' (consecutive whole layers), 'cross', or None (not a piece a core holds)."""
        if pre_n[j] - pre_n[i] > core_neurons or pre_s[j] - pre_s[i] > core_synapses:
            return None
        span = units[j - 1][0] - units[i][0]
        if span == 0:
            return "slice"
        if i in first and j in last:
            return "whole"
        return "cross" if span == 1 else None

    kinds = {(i, j): kind(i, j) for i in range(N) for j in range(i + 1, N + 1)}
    INF = float("inf")
    # pass 1: the least work on the busiest core
    best = [[INF] * (cores + 1) for _ in range(N + 1)]
    best[N][0] = 0
    for i in range(N - 1, -1, -1):
        for k in range(1, cores + 1):
            best[i][k] = min((max(pre_w[j] - pre_w[i], best[j][k - 1]) for j in range(i + 1, N + 1)
                              if kinds[(i, j)] and best[j][k - 1] < INF), default=INF)
    limit = best[0][cores]
    if limit == INF:
        raise MappingError(f"{cores} cores of {core_neurons} neurons and {core_synapses} synapses cannot hold the "
                           f"layers {sizes}; this network needs at least {need} cores of this size")
    # pass 2: under that limit, the fewest cross cores, then the evenest work
    tie = [[(INF, INF, ())] * (cores + 1) for _ in range(N + 1)]
    tie[N][0] = (0, 0, ())
    for i in range(N - 1, -1, -1):
        for k in range(1, cores + 1):
            options = []
            for j in range(i + 1, N + 1):
                w = pre_w[j] - pre_w[i]
                if not kinds[(i, j)] or w > limit or tie[j][k - 1][0] == INF:
                    continue
                c, sq, cuts = tie[j][k - 1]
                options.append((c + (kinds[(i, j)] == "cross"), sq + w * w, (j, *cuts)))
            if options:
                tie[i][k] = min(options)
    held, a = [], 0
    for b in tie[0][cores][2]:
        pieces: dict[int, list[int]] = {}
        for l, lo, hi in units[a:b]:
            pieces.setdefault(l, [lo, hi])[1] = hi
        held.append(tuple(Slice(l, lo, hi, fan_ins[l]) for l, (lo, hi) in pieces.items()))
        a = b
    placement = Placement(layers, tuple(held))
    _check_capacity(placement, core_neurons, core_synapses, need)
    return placement


def _check_capacity(placement: Placement, core_neurons: int, core_synapses: int, need: int) -> None:
    total = sum(s.synapses for held in placement.cores for s in held)
    for c, h in enumerate(placement.cores):
        n = sum(s.neurons for s in h)
        syn = sum(s.synapses for s in h)
        what = " ".join(str(s) for s in h)
        if n > core_neurons:
            raise MappingError(
                f"core {c} would hold {n} neurons ({what}) but hardware.core_neurons = {core_neurons}; "
                f"this network needs at least {need} cores of this size"
            )
        if syn > core_synapses:
            raise MappingError(
                f"core {c} would hold {syn} synapses ({what}) but hardware.core_synapses = {core_synapses}; "
                f"this network of {total} synapses needs at least {need} cores"
            )


def place_config(cfg: SpikeforgeConfig, cores: int | None = None) -> Placement:
    """The placement of ``cfg``'s network on ``cores`` (default ``hardware.cores``)."""
    hw = cfg.hardware
    return place(cfg.network.layers, hw.cores if cores is None else cores, hw.core_neurons, hw.core_synapses,
                 align=hw.lanes)

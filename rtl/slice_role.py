"""What one core of a multi-core accelerator is to its neighbours (docs/multicore.md).

A :class:`~spikeforge.rtl.core.Core` built with a :class:`SliceRole` computes what the placement
gives it -- one slice of one layer, whole consecutive layers, or the end of one layer and the
start of the next (a *cross* core); its config is that sub-network (:func:`core_config`) -- and
talks to the other cores instead of only to the host. Each layer the core holds has a
:class:`LayerLink`:

- its input spikes come from the spike network (``spike_senders`` cores hold the layer below),
  unless it is the first layer of the network (pixels) or the layer below it is whole on this core;
- its spikes go to the cores ``spike_dst`` holding the next layer, unless that layer is whole on
  this core or this is the output layer;
- its errors arrive as partial sums from the ``error_senders`` cores of the layer above and are
  rounded once (ErrorInbox), unless it is the output layer (readout) or the layer above is whole
  on this core;
- its unrounded W^T delta partial sums go to ``error_owners``, the (core, lo, hi) slices of the
  layer below, unless that is the network's input or whole on this core.

Two whole layers on one core meet locally (the one-core datapath). Any other pair of consecutive
layers meets over the networks, the core addressing itself for its own part (the routers deliver
a flit to its sender when the sender is in the range): so a cross core needs no datapath of its own,
only a second inbox and outbox. Its flits then carry the sending layer (``tag_bits``), for the
receiver to tell the two layers' flits apart.

Everything here is a constant of the generated core, taken from the mapper's placement.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.utils import ceil_log2

from spikeforge.config import SpikeforgeConfig
from spikeforge.mapper import Placement, Slice

__all__ = ["LayerLink", "SliceRole", "core_config", "roles_of", "pipeline_stages", "lagging_cores"]


@dataclass(frozen=True)
class LayerLink:
    """How one layer a core holds meets the other cores (see the module docstring)."""

    layer: int  # the layer in the network (0 = the first LIF layer)
    lo: int  # the neurons held: lo .. hi-1
    hi: int
    layer_neurons: int  # neurons of the whole layer (spike flits carry indices in it)
    spike_senders: int  # cores sending this layer's input spikes (0: pixels, or the layer below, here)
    spike_dst: tuple[int, int] | None  # first and last core of the next layer (None: output, or local)
    error_senders: int  # cores sending this layer's error partial sums (0: readout, or the layer above, here)
    error_owners: tuple[tuple[int, int, int], ...] | None  # slices of the layer below (None: inputs, or local)
    error_index_neurons: int  # the largest slice of this layer: error flits' group field covers it


@dataclass(frozen=True)
class SliceRole:
    core: int
    links: tuple[LayerLink, ...]  # one per layer the core holds, in layer order
    spike_width: int  # data bits of the spike network's flits
    error_width: int  # data bits of the error network's flits
    acc_bits: int  # width of the W^T delta partial sums on the error network
    buffers: int = 1  # samples whose state the core holds (hardware.sample_buffers); flits carry the bank
    stage: int = 0  # the core's place in the layer pipeline: 0 = the first layer's cores
    stages: int = 1  # pipeline stages (groups of cores ending with the same layer)
    tag_bits: int = 0  # flits carry their sending layer in the top bits of their data (a cross core is in the build)

    output: bool = False  # the core holds the output layer (its readout decides the class)
    #: a cross core whose second slice's layer has other cores, with samples in flight: its first
    #: slice's backward pass runs one sample behind the second's (see :func:`roles_of`)
    lag: bool = False

    @property
    def network_inputs(self) -> bool:
        """The first layer's inputs come from the spike network (not from pixels)."""
        return self.links[0].spike_senders > 0


def core_config(cfg: SpikeforgeConfig, held: tuple[Slice, ...]) -> SpikeforgeConfig:
    """The network a core computes: the inputs of its first slice, then its slices' neurons (and,
    when a slice takes a whole layer below of which the core holds only the end, each slice's
    fan-in: ``network.inputs``)."""
    layers = [held[0].fan_in, *(s.neurons for s in held)]
    fan_ins = [s.fan_in for s in held]
    inputs = fan_ins if fan_ins != layers[:-1] else []
    # the placement's profile (hardware.neuron_cost) is of the whole network, not of this part
    return cfg.replace(network={"layers": layers, "inputs": inputs}, hardware={"neuron_cost": ()})


def _last_layers(placement: Placement) -> list[int]:
    return [held[-1].layer for held in placement.cores]


def pipeline_stages(placement: Placement) -> list[int]:
    """Each core's pipeline stage: cores whose last layer is the same form one stage, in layer
    order (a cross core runs with the next layer's cores: its second slice waits for the spikes
    of the first layer's other cores, and they wait for its error partial sums)."""
    lasts = sorted(set(_last_layers(placement)))
    return [lasts.index(l) for l in _last_layers(placement)]


def lagging_cores(placement: Placement, buffers: int) -> list[bool]:
    """Which cores run their first slice's backward pass a sample behind their second's: the cross
    cores whose second slice's layer also has other cores, when a bank is free for the extra
    sample (``buffers`` above the core's warm-up).

    Such a core's first slice takes its errors from every core of the second slice's layer, and
    those run their backward passes of a sample while this core runs its second slice's: the first
    slice would wait, idle, for the slowest of them. A sample behind, it finds them all in. (With
    one sample in flight there is nothing to lag behind; a second slice alone on its layer sends
    this core's first slice everything itself.)"""
    stages = pipeline_stages(placement)
    # the extra sample must fit beside the core's warm-up (sim/multicore_driver.py pipeline_order),
    # which lowering would make the warm-ups grow upward: a wait cycle
    return [_cross(placement, held) and len(placement.cores_of_layer(held[1].layer)) > 1
            and max(stages) + 1 - stage < buffers
            for held, stage in zip(placement.cores, stages)]


def _whole(placement: Placement, s: Slice) -> bool:
    return s.lo == 0 and s.hi == placement.layers[s.layer + 1]


def _cross(placement: Placement, held: tuple[Slice, ...]) -> bool:
    """The core holds the end of one layer and the start of the next, not both whole (two whole
    layers meet locally, as on one core)."""
    return (len(held) == 2 and held[1].layer == held[0].layer + 1
            and held[0].hi == placement.layers[held[0].layer + 1] and held[1].lo == 0
            and not (_whole(placement, held[0]) and _whole(placement, held[1])))


def roles_of(placement: Placement, timesteps: int, acc_bits: int, buffers: int = 1, lanes: int = 1) -> list[SliceRole]:
    """The role of each core of ``placement`` (``spikeforge.mapper.place_pipeline``): each core
    holds one slice, whole consecutive layers, or the end of one layer and the start of the next.
    ``buffers``: samples in flight per core."""
    from .inbox import error_flit_layout, spike_flit_layout

    layers = placement.layers
    n_lif = len(layers) - 1
    for c, held in enumerate(placement.cores):
        consecutive = all(b.layer == a.layer + 1 for a, b in zip(held, held[1:]))
        whole = all(_whole(placement, s) for s in held)
        if len(held) > 1 and not (consecutive and whole) and not _cross(placement, held):
            raise ValueError(f"core {c} holds {' '.join(map(str, held))}: a core of the multi-core RTL holds one slice, "
                             f"whole consecutive layers, or the end of one layer and the start of the next "
                             f"(spikeforge.mapper.place_pipeline)\n{placement.describe()}")
    outputs = placement.cores_of_layer(n_lif - 1)
    if len(outputs) != 1:
        raise ValueError(f"the output layer must sit on one core (its readout decides the class); it is on cores {outputs}")
    slices = [s for held in placement.cores for s in held]
    largest = [max(s.neurons for s in slices if s.layer == l) for l in range(n_lif)]
    tagged = any(_cross(placement, h) for h in placement.cores)
    tag_bits = max(1, ceil_log2(n_lif)) if tagged else 0
    spike_width = max(spike_flit_layout(timesteps, layers[l + 1], buffers).size for l in range(n_lif)) + tag_bits
    error_width = max(error_flit_layout(timesteps, -(-largest[l] // lanes), acc_bits, buffers, lanes).size
                      for l in range(n_lif)) + tag_bits
    stages = pipeline_stages(placement)
    lags = lagging_cores(placement, buffers)

    def span(l: int) -> tuple[int, int]:
        cores = placement.cores_of_layer(l)
        return min(cores), max(cores)

    roles = []
    for c, held in enumerate(placement.cores):
        links = []
        for j, s in enumerate(held):
            l = s.layer
            # the boundary to the layer below / above is local when both sides are whole here
            local_below = j > 0 and _whole(placement, held[j - 1]) and _whole(placement, s)
            local_above = j + 1 < len(held) and _whole(placement, held[j + 1]) and _whole(placement, s)
            below = placement.slices_of_layer(l - 1) if l > 0 and not local_below else []
            links.append(LayerLink(
                layer=l, lo=s.lo, hi=s.hi, layer_neurons=layers[l + 1],
                spike_senders=len(below),
                spike_dst=span(l + 1) if l + 1 < n_lif and not local_above else None,
                error_senders=len(placement.cores_of_layer(l + 1)) if l + 1 < n_lif and not local_above else 0,
                error_owners=tuple((cb, sb.lo, sb.hi) for cb, sb in below) if below else None,
                error_index_neurons=largest[l]))
        roles.append(SliceRole(core=c, links=tuple(links), spike_width=spike_width, error_width=error_width,
                               acc_bits=acc_bits, buffers=buffers, stage=stages[c], stages=max(stages) + 1,
                               tag_bits=tag_bits, output=held[-1].layer == n_lif - 1,
                               lag=lags[c]))
    return roles

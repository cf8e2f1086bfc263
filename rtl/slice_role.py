"""What one core of a multi-core accelerator is to its neighbours (docs/multicore.md).

A :class:`~spikeforge.rtl.core.Core` built with a :class:`SliceRole` computes what the placement
gives it -- one slice of one layer, or whole consecutive layers; its config is that sub-network
(:func:`core_config`) -- and talks to the other cores instead of only to the host:

- a slice of a later layer collects its input spikes from the spike network (``spike_senders``
  cores hold the layer below) instead of encoding pixels;
- a slice with a next layer sends its spikes to the cores ``spike_dst`` hold;
- a slice below the output layer receives its errors as partial sums from the ``error_senders``
  cores of the layer above and rounds them once (ErrorInbox) instead of asking the readout;
- a slice above the first layer sends its unrounded W^T delta partial sums to ``error_owners``,
  the (core, lo, hi) slices of the layer below.

Everything here is a constant of the generated core, taken from the mapper's placement.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikeforge.config import SpikeforgeConfig
from spikeforge.mapper import Placement, Slice

__all__ = ["SliceRole", "core_config", "roles_of", "pipeline_stages"]


@dataclass(frozen=True)
class SliceRole:
    core: int
    layer: int  # the core's first LIF layer (0 = the network's first)
    offset: int  # the first neuron the core holds of its last layer (0 unless it holds a slice)
    layer_neurons: int  # neurons of the core's last layer, whole (spike flits carry indices in it)
    spike_senders: int  # cores of the layer below (0: the first layer, inputs from pixels)
    spike_dst: tuple[int, int] | None  # first and last core of the next layer (None: output layer)
    error_senders: int  # cores of the layer above (0: the output layer, errors from the readout)
    error_owners: tuple[tuple[int, int, int], ...] | None  # slices of the layer below (None: first layer)
    error_index_neurons: int  # the largest slice of this layer: error flits' index field covers it
    spike_width: int  # data bits of the spike network's flits
    error_width: int  # data bits of the error network's flits
    acc_bits: int  # width of the W^T delta partial sums on the error network
    buffers: int = 1  # samples whose state the core holds (hardware.sample_buffers); flits carry the bank
    stage: int = 0  # the core's place in the layer pipeline: 0 = the first layer's cores
    stages: int = 1  # pipeline stages (groups of cores holding the same layers)

    @property
    def output(self) -> bool:
        return self.spike_dst is None


def core_config(cfg: SpikeforgeConfig, held: tuple[Slice, ...]) -> SpikeforgeConfig:
    """The network a core computes: the inputs of its first slice, then its slices' neurons."""
    # the placement's profile (hardware.neuron_cost) is of the whole network, not of this part
    return cfg.replace(network={"layers": [held[0].fan_in, *(s.neurons for s in held)]}, hardware={"neuron_cost": ()})


def pipeline_stages(placement: Placement) -> list[int]:
    """Each core's pipeline stage: cores holding the same layers form one stage, in layer order."""
    firsts = sorted({held[0].layer for held in placement.cores})
    return [firsts.index(held[0].layer) for held in placement.cores]


def roles_of(placement: Placement, timesteps: int, acc_bits: int, buffers: int = 1, lanes: int = 1) -> list[SliceRole]:
    """The role of each core of a layer-aligned ``placement`` (``spikeforge.mapper.place_by_layer``):
    each core holds one slice, or whole consecutive layers. ``buffers``: samples in flight per core."""
    from .inbox import error_flit_layout, spike_flit_layout

    layers = placement.layers
    for c, held in enumerate(placement.cores):
        whole = all(s.lo == 0 and s.hi == layers[s.layer + 1] for s in held)
        consecutive = all(b.layer == a.layer + 1 for a, b in zip(held, held[1:]))
        if len(held) > 1 and not (whole and consecutive):
            raise ValueError(f"core {c} holds {' '.join(map(str, held))}: a core of the multi-core RTL holds one "
                             f"slice or whole consecutive layers (spikeforge.mapper.place_by_layer)\n{placement.describe()}")
    n_lif = len(layers) - 1
    outputs = placement.cores_of_layer(n_lif - 1)
    if len(outputs) != 1:
        raise ValueError(f"the output layer must sit on one core (its readout decides the class); it is on cores {outputs}")
    slices = [s for held in placement.cores for s in held]
    largest = [max(s.neurons for s in slices if s.layer == l) for l in range(n_lif)]
    spike_width = max(spike_flit_layout(timesteps, layers[l + 1], buffers).size for l in range(n_lif))
    error_width = max(error_flit_layout(timesteps, -(-largest[l] // lanes), acc_bits, buffers, lanes).size
                      for l in range(n_lif))
    stages = pipeline_stages(placement)
    roles = []
    for c, held in enumerate(placement.cores):
        first, last = held[0], held[-1]
        below = placement.slices_of_layer(first.layer - 1) if first.layer > 0 else []
        above = placement.cores_of_layer(last.layer + 1) if last.layer + 1 < n_lif else []
        roles.append(SliceRole(
            core=c, layer=first.layer, offset=last.lo, layer_neurons=layers[last.layer + 1],
            spike_senders=len(below), spike_dst=(min(above), max(above)) if above else None,
            error_senders=len(above),
            error_owners=tuple((cb, sb.lo, sb.hi) for cb, sb in below) if below else None,
            error_index_neurons=largest[last.layer], spike_width=spike_width, error_width=error_width,
            acc_bits=acc_bits, buffers=buffers, stage=stages[c], stages=max(stages) + 1))
    return roles

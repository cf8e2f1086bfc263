"""What one core of a multi-core accelerator is to its neighbours (docs/multicore.md).

A :class:`~spikeforge.rtl.core.Core` built with a :class:`SliceRole` computes one slice of one
layer (its config is the one-layer network ``[fan_in, neurons]`` of the slice) and talks to the
other cores instead of only to the host:

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

from spikeforge.mapper import Placement

__all__ = ["SliceRole", "roles_of"]


@dataclass(frozen=True)
class SliceRole:
    core: int
    layer: int  # the slice's LIF layer (0 = first)
    offset: int  # the slice's first neuron in its layer
    layer_neurons: int  # neurons of the slice's whole layer (spike flits carry indices in it)
    spike_senders: int  # cores of the layer below (0: the first layer, inputs from pixels)
    spike_dst: tuple[int, int] | None  # first and last core of the next layer (None: output layer)
    error_senders: int  # cores of the layer above (0: the output layer, errors from the readout)
    error_owners: tuple[tuple[int, int, int], ...] | None  # slices of the layer below (None: first layer)
    error_index_neurons: int  # the largest slice of this layer: error flits' index field covers it
    spike_width: int  # data bits of the spike network's flits
    error_width: int  # data bits of the error network's flits
    acc_bits: int  # width of the W^T delta partial sums on the error network

    @property
    def output(self) -> bool:
        return self.spike_dst is None


def roles_of(placement: Placement, timesteps: int, acc_bits: int) -> list[SliceRole]:
    """The role of each core of a one-slice-per-core ``placement``."""
    from .inbox import error_flit_layout, spike_flit_layout

    if any(len(held) != 1 for held in placement.cores):
        raise ValueError("a multi-core accelerator runs one slice per core; this placement gives a core "
                         f"{max(len(h) for h in placement.cores)} slices:\n{placement.describe()}")
    layers = placement.layers
    n_lif = len(layers) - 1
    slices = [held[0] for held in placement.cores]
    largest = [max(s.neurons for s in slices if s.layer == l) for l in range(n_lif)]
    spike_width = max(spike_flit_layout(timesteps, layers[l + 1]).size for l in range(n_lif))
    error_width = max(error_flit_layout(timesteps, largest[l], acc_bits).size for l in range(n_lif))
    roles = []
    for c, s in enumerate(slices):
        below = placement.slices_of_layer(s.layer - 1) if s.layer > 0 else []
        above = placement.cores_of_layer(s.layer + 1) if s.layer + 1 < n_lif else []
        roles.append(SliceRole(
            core=c, layer=s.layer, offset=s.lo, layer_neurons=layers[s.layer + 1],
            spike_senders=len(below), spike_dst=(min(above), max(above)) if above else None,
            error_senders=len(above),
            error_owners=tuple((cb, sb.lo, sb.hi) for cb, sb in below) if below else None,
            error_index_neurons=largest[s.layer], spike_width=spike_width, error_width=error_width,
            acc_bits=acc_bits))
    return roles

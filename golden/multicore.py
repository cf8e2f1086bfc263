"""Bit-exact model of a network trained on several cores (docs/arithmetic.md, "Multi-core").

Each core holds the slices the mapper gave it (spikeforge/mapper.py) and computes only with what
it holds or receives over the interconnect:

forward   a slice integrates the previous layer's spikes (gathered from the cores that hold that
          layer) with its own weight rows and runs the LIF step for its neurons;
readout   the output layer's counts and membrane sums are gathered for the prediction; the
          output error of a neuron needs only its own count and the label;
backward  a slice computes its neurons' deltas, its weight gradients, and the *partial* sum
          sum_j W[j,:] delta[t,j] over its rows at full accumulator width. The core holding input
          neuron i of the layer below adds the partial sums of every slice (exact integer sums, so
          the order in which they arrive does not matter) and rounds and saturates once;
update    a slice applies its gradients with the stochastic-rounding draws the one-core stream
          would give its weights: its LFSR is the stream's state at the slice's first weight
          (``lfsr.jump``), and the stream then moves on by the whole network's draws.

Every one of these is the one-core contract restricted to a subset of neurons, which is why
``weights_sha256`` does not depend on the number of cores. The class also counts the messages the
interconnect would carry, for the traffic and scaling figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.mapper import Placement, Slice, place_config

from . import encoder, lfsr, model
from .backend import update_seed

__all__ = ["MultiCoreGolden", "LinkTraffic", "SliceActivity"]


@dataclass
class SliceActivity:
    """What one slice did for each sample of one batch (tensors indexed [t, b] or [b]); the
    scaling model (spikeforge/scaling.py) turns it into engine cycles."""

    core: int
    slice: Slice
    input_events: torch.Tensor  # (T,B) spikes arriving at the layer (nnz of x[t])
    delta_nonzero: torch.Tensor  # (T,B) non-zero deltas of the slice's neurons
    delta_groups: torch.Tensor  # (T,B) lane groups of the slice holding a non-zero delta
    spikes_out: torch.Tensor  # (B,) spike events the slice sends to the next layer
    partials_out: torch.Tensor  # (B,) non-zero error partial sums it sends to other cores


@dataclass
class LinkTraffic:
    """Messages between cores, summed over a run (one message = one spike event or one non-zero
    error partial sum, sent once to each core that needs it)."""

    spike_messages: int = 0
    error_messages: int = 0
    per_core_spikes_in: list[int] = field(default_factory=list)
    per_core_errors_in: list[int] = field(default_factory=list)


class MultiCoreGolden:
    """The training-driver backend (spikeforge.train.Backend) of a multi-core accelerator."""

    name = "golden-multicore"

    def __init__(self, cfg: SpikeforgeConfig, cores: int | None = None, weights: list[torch.Tensor] | None = None,
                 placement: Placement | None = None):
        self.cfg = cfg
        self.placement = placement or place_config(cfg, cores)
        full = [w.clone() for w in weights] if weights is not None else model.init_weights(cfg)
        model._check_weights(cfg, full)
        # each core keeps only its own rows
        self.core_weights: list[list[torch.Tensor]] = [
            [full[s.layer][s.lo : s.hi].clone() for s in held] for held in self.placement.cores
        ]
        self.stream_state = lfsr.seed_state(update_seed(cfg))  # where the one-core update stream stands
        self.lr_shift = cfg.training.lr_shift
        n = self.placement.n_cores
        self.traffic = LinkTraffic(per_core_spikes_in=[0] * n, per_core_errors_in=[0] * n)
        self.activity: list[list[SliceActivity]] | None = None  # set to [] to record every batch

    def load_weights(self, weights: list[torch.Tensor]) -> None:
        model._check_weights(self.cfg, weights)
        self.core_weights = [[weights[s.layer][s.lo : s.hi].clone() for s in held] for held in self.placement.cores]

    def seed_update_lfsr(self, seed: int) -> None:
        self.stream_state = lfsr.seed_state(seed)

    # -- views ----------------------------------------------------------------------------------
    @property
    def weights(self) -> list[torch.Tensor]:
        """The whole network's weights, gathered from the cores (what the host reads back)."""
        out = []
        for l in range(len(self.cfg.layer_shapes)):
            out.append(torch.cat([self._w(c, s) for c, s in self.placement.slices_of_layer(l)]))
        return out

    def _w(self, core: int, s: Slice) -> torch.Tensor:
        return self.core_weights[core][self.placement.cores[core].index(s)]

    def encode(self, pixels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return encoder.encode(pixels, seeds, self.cfg.network.timesteps, self.cfg.formats.pixel_bits)

    # -- the passes -----------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> tuple[list[list[model.LayerForward]], torch.Tensor]:
        """Per layer, the slices' forward results in neuron order; returns them and the last spikes."""
        per_layer = []
        for l in range(len(self.cfg.layer_shapes)):
            parts = [(c, s, model.lif_forward(self.cfg, self._w(c, s), x)) for c, s in self.placement.slices_of_layer(l)]
            self._count_spikes(l, parts)
            per_layer.append(parts)
            x = torch.cat([fw.spikes for _, _, fw in parts], dim=2)  # the gather: every slice's spike events
        return per_layer, x

    def _count_spikes(self, layer: int, parts) -> None:
        if layer + 1 >= len(self.cfg.layer_shapes):
            return
        receivers = sorted(set(self.placement.cores_of_layer(layer + 1)))
        for c, _, fw in parts:
            n = int(fw.spikes.sum())
            for r in receivers:
                if r != c:
                    self.traffic.spike_messages += n
                    self.traffic.per_core_spikes_in[r] += n

    def _readout(self, last: list) -> tuple[torch.Tensor, torch.Tensor]:
        counts = torch.cat([fw.spikes.sum(0) for _, _, fw in last], dim=1)
        msum = torch.cat([fw.membrane.sum(0) for _, _, fw in last], dim=1)
        return counts, msum

    def infer(self, pixels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        per_layer, _ = self._forward(self.encode(pixels, seeds))
        return model.predict(*self._readout(per_layer[-1]))

    def train_batch(self, pixels: torch.Tensor, seeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if len(labels) > cfg.training.batch_size:
            raise ValueError(f"batch of {len(labels)} samples exceeds training.batch_size = {cfg.training.batch_size}")
        inputs = self.encode(pixels, seeds)
        per_layer, _ = self._forward(inputs)
        counts, msum = self._readout(per_layer[-1])
        T = cfg.network.timesteps
        # output error: per neuron, so each output slice's columns are its own (the label is
        # broadcast to the slices)
        eps_full = model.output_error(cfg, counts, labels)
        errors = {(c, s): eps_full[:, s.lo : s.hi].unsqueeze(0).expand(T, -1, -1) for c, s in self.placement.slices_of_layer(len(per_layer) - 1)}
        grads: dict[tuple[int, Slice], torch.Tensor] = {}
        batch_activity = []
        for l in range(len(per_layer) - 1, -1, -1):
            x = inputs if l == 0 else torch.cat([fw.spikes for _, _, fw in per_layer[l - 1]], dim=2)
            acc = None
            for c, s, fw in per_layer[l]:
                delta = model.layer_delta(cfg, fw, errors[(c, s)])
                grads[(c, s)] = model.weight_grad(cfg, delta, x)
                part = None
                if l > 0:
                    part = model.error_partial(cfg, self._w(c, s), delta)
                    self._count_errors(l, c, part)
                    acc = part if acc is None else acc + part  # the receivers' wide accumulators
                if self.activity is not None:
                    batch_activity.append(self._activity(c, s, x, delta, fw, part, l))
            if l > 0:
                eps = model.error_finish(cfg, acc)
                errors = {(c, s): eps[:, :, s.lo : s.hi] for c, s, _ in per_layer[l - 1]}
        self._update(grads)
        if self.activity is not None:
            self.activity.append(batch_activity[::-1])
        return model.predict(counts, msum)

    def _activity(self, core: int, s: Slice, x, delta, fw, part, layer: int) -> SliceActivity:
        T, B, n = delta.shape
        P = self.cfg.hardware.lanes
        pad = (-n) % P
        nz = delta != 0
        groups = torch.nn.functional.pad(nz, (0, pad)).view(T, B, -1, P).any(-1).sum(-1)
        if part is None:
            sent = torch.zeros(B, dtype=torch.int64)
        else:  # partial sums for inputs held by other cores
            other = torch.ones(part.shape[2], dtype=torch.bool)
            for c, t in self.placement.slices_of_layer(layer - 1):
                if c == core:
                    other[t.lo : t.hi] = False
            sent = ((part != 0) & other).sum((0, 2))
        nxt = self.placement.cores_of_layer(layer + 1) if layer + 1 < len(self.cfg.layer_shapes) else []
        out = fw.spikes.sum((0, 2)) if any(r != core for r in nxt) else torch.zeros(B, dtype=torch.int64)
        return SliceActivity(core, s, x.sum(2), nz.sum(2), groups, out, sent)

    def _count_errors(self, layer: int, core: int, part: torch.Tensor) -> None:
        """Non-zero partial sums leave the core for the core holding that input neuron."""
        for c, s in self.placement.slices_of_layer(layer - 1):
            if c != core:
                n = int((part[:, :, s.lo : s.hi] != 0).sum())
                self.traffic.error_messages += n
                self.traffic.per_core_errors_in[c] += n

    def _update(self, grads: dict[tuple[int, Slice], torch.Tensor]) -> None:
        cfg = self.cfg
        tr = cfg.training
        shift = self.lr_shift
        stochastic = tr.update_rounding == "stochastic" and shift
        bits = model.update_draw_bits(shift) if stochastic else 0
        offsets = [0]
        for n_out, n_in in cfg.layer_shapes:
            offsets.append(offsets[-1] + n_out * n_in)
        for c, held in enumerate(self.placement.cores):
            for k, s in enumerate(held):
                w = self.core_weights[c][k]
                draws = None
                if stochastic:
                    first = offsets[s.layer] + s.lo * s.fan_in  # the slice's first weight, row-major
                    state = lfsr.jump(self.stream_state, first * bits)
                    draws = lfsr.draw_stream(torch.tensor([state]), w.numel(), bits)[0][0]
                self.core_weights[c][k] = model.update_matrix(cfg, w, grads[(c, s)], shift, draws)
        if stochastic:
            self.stream_state = lfsr.jump(self.stream_state, offsets[-1] * bits)

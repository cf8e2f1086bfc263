"""The golden model behind the same training-driver interface the RTL backend implements."""

from __future__ import annotations

import torch

from spikeforge.config import SpikeforgeConfig

from . import encoder, lfsr, model

__all__ = ["GoldenBackend", "update_seed", "worker_update_seed"]


def update_seed(cfg: SpikeforgeConfig) -> int:
    """Seed of the stochastic-rounding LFSR: the run seed mixed into its own stream."""
    return encoder.sample_seed(cfg.training.seed, 0xFFFF_FFFF, 0)


def worker_update_seed(cfg: SpikeforgeConfig, worker: int) -> int:
    """Update-LFSR seed of federated worker ``worker``: its own stream, worker 0's being the
    centralised run's (docs/arithmetic.md, "Federated averaging")."""
    return encoder.sample_seed(cfg.training.seed, 0xFFFF_FFFF, worker)


class GoldenBackend:
    """Holds integer weights and the update LFSR; trains and infers mini-batches bit-exactly."""

    name = "golden"

    def __init__(self, cfg: SpikeforgeConfig, weights: list[torch.Tensor] | None = None):
        self.cfg = cfg
        self.weights = [w.clone() for w in weights] if weights is not None else model.init_weights(cfg)
        model._check_weights(cfg, self.weights)
        self.update_rng = lfsr.LfsrStream(update_seed(cfg))
        self.last_trace: model.StepTrace | None = None
        self.lr_shift = cfg.training.lr_shift  # a host-written register: the driver may lower the rate

    def seed_update_lfsr(self, seed: int) -> None:
        self.update_rng = lfsr.LfsrStream(seed)

    def load_weights(self, weights: list[torch.Tensor]) -> None:
        model._check_weights(self.cfg, weights)
        self.weights = [w.clone() for w in weights]

    def encode(self, pixels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return encoder.encode(pixels, seeds, self.cfg.network.timesteps, self.cfg.formats.pixel_bits)

    def infer(self, pixels: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Predicted class per sample ``(B,)``."""
        trace = model.forward(self.cfg, self.weights, self.encode(pixels, seeds))
        return model.predict(trace.counts, trace.membrane_sum)

    def train_batch(self, pixels: torch.Tensor, seeds: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One mini-batch: forward, BP, WG accumulated over the batch, one update.

        Returns the class predicted for each sample by the forward pass (before the update)."""
        trace = model.forward(self.cfg, self.weights, self.encode(pixels, seeds))
        model.backward(self.cfg, self.weights, trace, labels)
        trace.weights_before = self.weights
        self.weights = model.apply_update(self.cfg, self.weights, [b.grad for b in trace.backward], self.update_rng, self.lr_shift)
        trace.weights_after = self.weights
        self.last_trace = trace
        return model.predict(trace.counts, trace.membrane_sum)

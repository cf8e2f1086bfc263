"""On-chip rate encoder: pixel intensities to input spikes with the LFSR (docs/arithmetic.md).

For each sample the encoder LFSR is loaded with the sample's seed; draws are consumed timestep by
timestep and, within a timestep, pixel 0 first. Pixel ``i`` spikes at ``t`` when its
``pixel_bits``-wide draw ``u`` satisfies ``u < p_i``: intensity 0 never spikes, intensity
``2**pixel_bits - 1`` misses once in ``2**pixel_bits`` draws on average.
"""

from __future__ import annotations

import torch

from . import lfsr

__all__ = ["encode", "sample_seed"]


def sample_seed(seed: int, stream: int, index: int) -> int:
    """Host-side 32-bit seed of one sample: a fixed integer mix of (run seed, stream, sample index).

    ``stream`` separates draws of different epochs (training) from evaluation. The mix is
    splitmix-like and only ever runs on the host; the core receives the result with the sample.
    """
    z = (seed * 0x9E3779B1 + stream * 0x85EBCA77 + index * 0xC2B2AE3D + 0x27D4EB2F) & 0xFFFFFFFF
    z ^= z >> 15
    z = (z * 0x2C1B3C6D) & 0xFFFFFFFF
    z ^= z >> 12
    z = (z * 0x297A2D39) & 0xFFFFFFFF
    z ^= z >> 15
    return lfsr.seed_state(z)


def encode(pixels: torch.Tensor, seeds: torch.Tensor, timesteps: int, pixel_bits: int) -> torch.Tensor:
    """Spike trains ``(T, B, N)`` (int64 0/1) for pixels ``(B, N)`` in ``[0, 2**pixel_bits)``."""
    if pixels.dtype.is_floating_point or pixels.dtype == torch.bool:
        raise TypeError(f"pixels must be an integer tensor, got {pixels.dtype}")
    if pixels.dim() != 2:
        raise ValueError(f"pixels must be (batch, inputs), got shape {tuple(pixels.shape)}")
    if int(pixels.min()) < 0 or int(pixels.max()) >= (1 << pixel_bits):
        raise ValueError(
            f"pixel intensities must lie in [0, {(1 << pixel_bits) - 1}] for pixel_bits={pixel_bits}, "
            f"got [{int(pixels.min())}, {int(pixels.max())}]"
        )
    b, n = pixels.shape
    # the seed is loaded like the hardware loads it: seed 0 would be the LFSR's lock-up state
    states = torch.tensor([lfsr.seed_state(int(s)) for s in seeds], dtype=torch.int64)
    draws, _ = lfsr.draw_stream(states, timesteps * n, pixel_bits)  # (B, T*N), t-major
    draws = draws.view(b, timesteps, n).transpose(0, 1)
    return (draws < pixels.to(torch.int64).unsqueeze(0)).to(torch.int64)

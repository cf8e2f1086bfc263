"""The 32-bit Galois LFSR behind the spike encoder and stochastic rounding.

Polynomial x^32 + x^22 + x^2 + x + 1 (maximal length, period 2^32 - 1), right-shifting Galois
form with toggle mask ``0x80200003``. One *step*:

    out   = state & 1
    state = (state >> 1) ^ (MASK if out else 0)

A *draw* of ``r`` bits is the next ``r`` output bits, the first one in bit 0. Hardware computes an
``r``-bit draw in one cycle as a fixed XOR network; the golden model uses the same linear map over
GF(2), so a whole stream of draws for many seeds is one integer matrix product.

State 0 is the LFSR's lock-up state and is never used: :func:`seed_state` maps a 32-bit seed to a
legal state.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

__all__ = ["MASK", "WIDTH", "seed_state", "step", "draw", "draw_stream", "advance_matrix", "jump", "LfsrStream"]

WIDTH = 32
MASK = 0x80200003


def seed_state(seed: int) -> int:
    """Legal (non-zero) LFSR state for a 32-bit seed: the seed itself, or 1 for seed 0."""
    s = seed & 0xFFFFFFFF
    return s if s else 1


def step(state: int) -> tuple[int, int]:
    """One LFSR step: returns (output bit, next state)."""
    out = state & 1
    state >>= 1
    if out:
        state ^= MASK
    return out, state


def draw(state: int, bits: int) -> tuple[int, int]:
    """One ``bits``-wide draw (first output bit in bit 0): returns (value, next state)."""
    value = 0
    for k in range(bits):
        out, state = step(state)
        value |= out << k
    return value, state


def _step_matrix() -> np.ndarray:
    """A with next_state = A @ state (mod 2), state as a column of bits, bit 0 first."""
    a = np.zeros((WIDTH, WIDTH), dtype=np.int64)
    for i in range(WIDTH - 1):
        a[i, i + 1] = 1
    for i in range(WIDTH):
        if (MASK >> i) & 1:
            a[i, 0] ^= 1
    return a


def _gf2_matmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y) & 1


@lru_cache(maxsize=64)
def advance_matrix(steps: int) -> np.ndarray:
    """A**steps over GF(2): the state after ``steps`` steps is ``advance_matrix(steps) @ state``."""
    result = np.eye(WIDTH, dtype=np.int64)
    base = _step_matrix()
    n = steps
    while n:
        if n & 1:
            result = _gf2_matmul(base, result)
        base = _gf2_matmul(base, base)
        n >>= 1
    return result


def jump(state: int, steps: int) -> int:
    """The state ``steps`` steps after ``state``, in O(log steps) matrix work instead of ``steps``
    single steps. The multi-core update uses it: each core starts its share of the row-major
    draw stream where the one-core stream would be at that core's first weight."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    bits = np.array([(state >> k) & 1 for k in range(WIDTH)], dtype=np.int64)
    nxt = (_advance_uncached(steps) @ bits) & 1
    return int(sum(int(b) << k for k, b in enumerate(nxt)))


def _advance_uncached(steps: int) -> np.ndarray:
    # the cache of advance_matrix holds the few step counts one run reuses; jump offsets are many
    return advance_matrix.__wrapped__(steps)


@lru_cache(maxsize=64)
def _output_rows(n_bits: int) -> torch.Tensor:
    """Row k is the linear functional giving output bit k (bit 0 of A**k @ state)."""
    rows = np.zeros((n_bits, WIDTH), dtype=np.int64)
    a = _step_matrix()
    r = np.zeros(WIDTH, dtype=np.int64)
    r[0] = 1
    for k in range(n_bits):
        rows[k] = r
        r = (r @ a) & 1
    return torch.from_numpy(rows.astype(np.int32))


@lru_cache(maxsize=64)
def _output_rows_t(n_bits: int) -> torch.Tensor:
    return _output_rows(n_bits).T.contiguous()


def _state_bits(states: torch.Tensor) -> torch.Tensor:
    shifts = torch.arange(WIDTH, dtype=torch.int64)
    return ((states.to(torch.int64).unsqueeze(-1) >> shifts) & 1).to(torch.int32)


def _pack(bits: torch.Tensor) -> torch.Tensor:
    return (bits.to(torch.int64) << torch.arange(WIDTH, dtype=torch.int64)).sum(-1)


def draw_stream(states: torch.Tensor, count: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` consecutive ``bits``-wide draws from each state in ``states`` (shape ``(B,)``).

    Returns ``(draws, next_states)``: ``draws`` has shape ``(B, count)``; ``next_states`` is where
    each LFSR stands after ``count * bits`` steps. Exactly what :func:`draw` gives in a loop.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count == 0:
        return torch.zeros(states.shape[0], 0, dtype=torch.int64), states.to(torch.int64).clone()
    n = count * bits
    sb = _state_bits(states)  # (B, 32)
    rows_t = _output_rows_t(n)  # (32, n): row j = how state bit j feeds each output bit
    # output bit k = XOR over the set state bits j of rows_t[j, k]: sum the selected rows, keep
    # the parity (an integer sum of at most 32 ones; much faster than a skinny int matmul)
    out = (torch.stack([rows_t[b.to(torch.bool)].sum(0, dtype=torch.int32) for b in sb]) & 1)  # (B, n)
    if not 1 <= bits <= 30:
        raise ValueError(f"draw width must be 1..30 bits, got {bits}")
    place = (1 << torch.arange(bits, dtype=torch.int32)).unsqueeze(1)  # packs bits as one small matmul
    draws = (out.view(-1, count, bits) @ place).squeeze(-1).to(torch.int64)
    adv = torch.from_numpy(advance_matrix(n).astype(np.int32))
    nxt = _pack((sb @ adv.T) & 1)
    return draws, nxt


class LfsrStream:
    """A stateful LFSR handing out vectors of draws in the contract's consumption order."""

    def __init__(self, seed: int):
        self.state = seed_state(seed)

    def take(self, count: int, bits: int) -> torch.Tensor:
        draws, nxt = draw_stream(torch.tensor([self.state]), count, bits)
        self.state = int(nxt[0])
        return draws[0]

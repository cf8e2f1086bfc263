"""Named rounding and saturation on integer tensors: the only arithmetic the golden model uses.

Every function takes and returns ``torch.int64`` tensors. Shifts are arithmetic (two's
complement, so ``x >> s`` is floor division by ``2**s`` for negative ``x`` too). Each rounding
mode has a name from docs/arithmetic.md; asking for a mode a rounding point does not implement
raises instead of silently approximating.
"""

from __future__ import annotations

import torch

__all__ = ["saturate", "round_shift", "stochastic_round_shift", "leak", "exact_matmul", "limits"]


def limits(bits: int) -> tuple[int, int]:
    """(min, max) of a signed two's-complement number of ``bits`` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def saturate(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Clamp to the signed range of ``bits`` bits (the contract's only overflow behaviour)."""
    lo, hi = limits(bits)
    return x.clamp(lo, hi)


def round_shift(x: torch.Tensor, shift: int, mode: str) -> torch.Tensor:
    """``x / 2**shift`` rounded to an integer by the named mode.

    floor      -- toward minus infinity (plain arithmetic shift)
    half_up    -- to nearest, ties toward plus infinity: ``(x + 2**(shift-1)) >> shift``
    half_even  -- to nearest, ties to the even neighbour
    """
    if shift < 0:
        raise ValueError(f"shift must be >= 0, got {shift}")
    if shift == 0:
        return x
    if mode == "floor":
        return x >> shift
    if mode == "half_up":
        return (x + (1 << (shift - 1))) >> shift
    if mode == "half_even":
        q = x >> shift
        r = x & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        up = (r > half) | ((r == half) & ((q & 1) == 1))
        return q + up.to(x.dtype)
    if mode == "stochastic":
        raise ValueError("round_shift: 'stochastic' needs random draws; use stochastic_round_shift")
    raise ValueError(f"unknown rounding mode {mode!r}")


def stochastic_round_shift(x: torch.Tensor, shift: int, draws: torch.Tensor, draw_bits: int) -> torch.Tensor:
    """``x / 2**shift`` rounded up with probability equal to the discarded fraction.

    The discarded low ``shift`` bits ``r`` are cut to their top ``draw_bits`` bits ``r'``; the result
    is ``floor(x / 2**shift) + (u < r')`` with ``u`` a uniform ``draw_bits``-bit draw per element.
    Unbiased to within ``2**-draw_bits`` of an LSB, for either sign of ``x``.
    """
    if shift == 0:
        return x
    if not 1 <= draw_bits <= shift:
        raise ValueError(f"draw_bits must be in [1, shift={shift}] (the contract draws min(shift, 16) bits), got {draw_bits}")
    if draws.shape != x.shape:
        raise ValueError(f"need one draw per element: draws {tuple(draws.shape)} vs x {tuple(x.shape)}")
    q = x >> shift
    r = x & ((1 << shift) - 1)
    if shift > draw_bits:
        r = r >> (shift - draw_bits)
    return q + (draws < r).to(x.dtype)


def leak(v: torch.Tensor, beta_q: int, beta_bits: int, mode: str) -> torch.Tensor:
    """``v * beta_q / 2**beta_bits`` rounded by ``mode`` (the multiplicative LIF leak)."""
    return round_shift(v * beta_q, beta_bits, mode)


def exact_matmul(a: torch.Tensor, b: torch.Tensor, bound: int) -> torch.Tensor:
    """Integer ``a @ b`` for integer tensors whose result is known to satisfy ``|entry| <= bound``.

    Both operands' products and every partial sum are bounded by ``bound`` too (callers derive it
    from the config widths), so when it fits in int32 the fast int32 kernel is exact; otherwise
    the int64 kernel is used. Either way the result is returned as int64.
    """
    if bound < (1 << 31) - 1:
        return (a.to(torch.int32) @ b.to(torch.int32)).to(torch.int64)
    return a.to(torch.int64) @ b.to(torch.int64)

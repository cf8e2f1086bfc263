"""Named rounding and saturation as hardware, mirroring golden/fixedpoint.py one for one."""

from __future__ import annotations

import operator
from functools import reduce

from amaranth import Mux, Signal, signed

__all__ = ["round_shift", "saturate", "clamp_bits", "leak", "times_const", "csd_terms", "one_hot_select"]


def round_shift(m, x, shift: int, mode: str, name: str):
    """x / 2**shift rounded by ``mode`` (floor / half_up / half_even), as a new signal."""
    out = Signal(signed(len(x) + 1), name=name)
    if shift == 0:
        m.d.comb += out.eq(x)
    elif mode == "floor":
        m.d.comb += out.eq(x >> shift)
    elif mode == "half_up":
        m.d.comb += out.eq((x + (1 << (shift - 1))) >> shift)
    elif mode == "half_even":
        q = Signal(signed(len(x) + 1), name=f"{name}_q")
        r = Signal(shift, name=f"{name}_r")
        half = 1 << (shift - 1)
        m.d.comb += [q.eq(x >> shift), r.eq(x[:shift])]
        m.d.comb += out.eq(q + ((r > half) | ((r == half) & q[0])))
    else:
        raise ValueError(f"rounding mode {mode!r} is not implemented in hardware for this point")
    return out


def saturate(m, x, lo: int, hi: int, width: int, name: str):
    """Clamp to [lo, hi] into a signed ``width``-bit signal. The full range of ``width`` bits is
    :func:`clamp_bits` (two reductions over the high bits instead of two compare chains)."""
    if (lo, hi) == (-(1 << (width - 1)), (1 << (width - 1)) - 1):
        return clamp_bits(m, x, width, name)
    out = Signal(signed(width), name=name)
    m.d.comb += out.eq(Mux(x > hi, hi, Mux(x < lo, lo, x)))
    return out


def clamp_bits(m, x, bits: int, name: str):
    """x clamped into a signed ``bits``-bit signal. The range test looks only at whether the bits
    above the kept ones all equal the sign (two reductions), not at two wide compare chains."""
    out = Signal(signed(bits), name=name)
    if len(x) <= bits:
        m.d.comb += out.eq(x)
        return out
    hi = x[bits - 1:]
    fits = ~hi.any() | hi.all()
    m.d.comb += out.eq(Mux(fits, x[:bits].as_signed(), Mux(x[-1], -(1 << (bits - 1)), (1 << (bits - 1)) - 1)))
    return out


def leak(m, v, beta_q: int, beta_bits: int, mode: str, name: str):
    """round(v * beta_q / 2**beta_bits): the LIF leak, also applied to delta in BP.

    The product is a constant multiply written as shift-adds over the canonical signed digits of
    beta_q (7 = 8 - 1: one subtractor), so it costs a carry chain per lane, not a DSP block.
    """
    return round_shift(m, times_const(v, beta_q), beta_bits, mode, name)


def times_const(v, c: int):
    """v * c for a constant c >= 0 as shift-adds over its canonical signed digits: a carry chain
    per non-zero digit instead of a DSP block (Yosys maps every `*`, constant or not, to one)."""
    prod = None
    for sign, shift in csd_terms(c):
        term = v << shift if shift else v
        prod = (term if sign > 0 else -term) if prod is None else (prod + term if sign > 0 else prod - term)
    return v * 0 if prod is None else prod


def csd_terms(c: int) -> list[tuple[int, int]]:
    """Canonical signed-digit form of c >= 0: [(+1 or -1, shift)], no two adjacent non-zero digits,
    so a constant multiply needs the fewest adders (7 → [(-1, 0), (+1, 3)])."""
    if c < 0:
        raise ValueError(f"csd_terms: c must be >= 0, got {c}")
    terms, shift = [], 0
    while c:
        if c & 1:
            digit = 2 - (c & 3)  # +1 when c mod 4 == 1, -1 when c mod 4 == 3
            terms.append((digit, shift))
            c -= digit
        c >>= 1
        shift += 1
    return terms


def one_hot_select(choices):
    """OR over (select, value) pairs of (select ? value : 0): a multiplexer whose select is already
    decoded (at most one select set; none gives 0). No compare sits in front of the values."""
    return reduce(operator.or_, [Mux(sel, value, 0) for sel, value in choices])

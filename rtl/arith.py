"""Named rounding and saturation as hardware, mirroring golden/fixedpoint.py one for one."""

from __future__ import annotations

from amaranth import Mux, Signal, signed

__all__ = ["round_shift", "saturate", "leak"]


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
    """Clamp to [lo, hi] into a signed ``width``-bit signal."""
    out = Signal(signed(width), name=name)
    m.d.comb += out.eq(Mux(x > hi, hi, Mux(x < lo, lo, x)))
    return out


def leak(m, v, beta_q: int, beta_bits: int, mode: str, name: str):
    """round(v * beta_q / 2**beta_bits): the LIF leak, also applied to delta in BP."""
    prod = Signal(signed(len(v) + beta_q.bit_length() + 1), name=f"{name}_prod")
    m.d.comb += prod.eq(v * beta_q)
    return round_shift(m, prod, beta_bits, mode, name)

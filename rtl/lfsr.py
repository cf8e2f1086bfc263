"""The contract's 32-bit Galois LFSR (docs/arithmetic.md §3), ``count`` draws per cycle.

A k-bit draw is the next k output bits, the first in bit 0, so ``count`` consecutive draws are the
next ``count * k`` output bits of the stream, and each of those bits is a fixed GF(2) linear
function of the current state. The same holds for the state after ``n`` steps. Both linear maps
come from :mod:`spikeforge.golden.lfsr` (``_output_rows`` and ``advance_matrix``) at elaboration
time and become XOR networks, so the hardware cannot follow a different stream from the golden model
unless those maps are wrong too, and the golden tests check them against the one-step loop.

Draws are a function of the current state only: lane ``m`` is the m-th draw from the current
position, so taking fewer draws (the last partial group of a matrix row) reads lanes
``0 .. c-1`` of the same output and only the advance differs.
"""

from __future__ import annotations

from collections.abc import Iterable

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from spikeforge.golden import lfsr as golden_lfsr

from .arith import one_hot_select

__all__ = ["LfsrDraws"]

WIDTH = golden_lfsr.WIDTH
#: golden ``draw_stream`` packs draws in int32; wider draws would have no vectorised reference
MAX_DRAW_BITS = 30


def _xor_of(state: Signal, taps: Iterable[int]):
    taps = list(taps)
    if not taps:
        return Const(0, 1)
    return Cat(*(state[j] for j in taps)).xor()


class LfsrDraws(wiring.Component):
    """``count`` draws of ``bits`` bits per cycle from the contract's LFSR.

    Parameters (elaboration time):

    * ``bits`` -- the draw width, or a tuple of widths to choose from at run time with the
      ``width`` input (one state register; draws and advance of each width are separate networks);
    * ``count`` -- draws taken by a ``next`` pulse;
    * ``short_counts`` -- smaller draw counts ``next`` can take instead, chosen with the ``take``
      input (for the last, partial group of a row);
    * ``init_seed`` -- the state after reset is ``seed_state(init_seed)``.

    Ports:

    * ``load``, ``seed`` -- load ``seed_state(seed)`` (seed 0 loads state 1); wins over ``next``;
    * ``next`` -- advance past the draws on ``draws`` (all ``count``, or ``take`` of them);
    * ``take`` (only with ``short_counts``) -- ``count`` or one of ``short_counts``; any other
      value advances by ``count``;
    * ``width`` (only with several widths) -- the draw width in bits, one of ``bits``; any other
      value holds the state and gives zero draws. With ``width_onehot``, bit i selects
      ``bits[i]`` instead (the decode moves to whoever drives it, off the draw path); no bit set
      holds the state and gives zero draws, and at most one bit may be set;
    * ``draws`` -- ``count`` lanes, lane 0 the next draw in stream order, zero-extended to the
      widest width;
    * ``state`` -- the current 32-bit state.
    """

    def __init__(self, bits: int | Iterable[int], count: int, *, short_counts: Iterable[int] = (), init_seed: int = 1,
                 width_onehot: bool = False):
        widths = (bits,) if isinstance(bits, int) and not isinstance(bits, bool) else tuple(bits)
        if not widths:
            raise ValueError("LfsrDraws: bits must name at least one draw width, got an empty sequence")
        for k in widths:
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_DRAW_BITS:
                raise ValueError(f"LfsrDraws: draw width must be an integer in [1, {MAX_DRAW_BITS}], got {k!r}")
        if len(set(widths)) != len(widths):
            raise ValueError(f"LfsrDraws: draw widths must be distinct, got {widths!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"LfsrDraws: count must be a positive integer, got {count!r}")
        shorts = tuple(sorted(set(short_counts)))
        for c in shorts:
            if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c < count:
                raise ValueError(f"LfsrDraws: short counts must be integers in [1, count-1 = {count - 1}], got {c!r}")
        if isinstance(init_seed, bool) or not isinstance(init_seed, int) or not 0 <= init_seed < (1 << WIDTH):
            raise ValueError(f"LfsrDraws: init_seed must be a 32-bit unsigned integer, got {init_seed!r}")
        self.widths = widths
        self.width_onehot = bool(width_onehot)
        self.count = count
        self.short_counts = shorts
        self.init_state = golden_lfsr.seed_state(init_seed)
        ports = {
            "load": In(1),
            "seed": In(WIDTH),
            "next": In(1),
            "draws": Out(data.ArrayLayout(unsigned(max(widths)), count)),
            "state": Out(WIDTH),
        }
        if shorts:
            ports["take"] = In(range(count + 1))
        if len(widths) > 1:
            ports["width"] = In(len(widths)) if self.width_onehot else In(range(max(widths) + 1))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        state = Signal(WIDTH, init=self.init_state)
        m.d.comb += self.state.eq(state)

        # one network for the longest stream prefix any width needs; narrower widths slice it
        n_out = self.count * max(self.widths)
        rows = golden_lfsr._output_rows(n_out).tolist()
        stream = Signal(n_out)
        for b, row in enumerate(rows):
            m.d.comb += stream[b].eq(_xor_of(state, (j for j in range(WIDTH) if row[j])))

        networks: dict[int, Signal] = {}

        def advanced(steps: int) -> Signal:
            # widths x counts can repeat a step count (2 x 8 == 4 x 4): share the network
            if steps not in networks:
                a = golden_lfsr.advance_matrix(steps)
                nxt = Signal(WIDTH, name=f"advance_{steps}")
                for r in range(WIDTH):
                    m.d.comb += nxt[r].eq(_xor_of(state, (j for j in range(WIDTH) if a[r, j])))
                networks[steps] = nxt
            return networks[steps]

        def width_logic(k):
            lanes = [stream[mm * k:(mm + 1) * k] for mm in range(self.count)]
            full = advanced(self.count * k)
            if not self.short_counts:
                return lanes, full
            nxt = Signal(WIDTH, name=f"next_state_w{k}")
            with m.Switch(self.take):
                for c in self.short_counts:
                    with m.Case(c):
                        m.d.comb += nxt.eq(advanced(c * k))
                with m.Default():
                    m.d.comb += nxt.eq(full)
            return lanes, nxt

        nxt_state = Signal(WIDTH)
        moves = Const(1, 1)  # a width that selects nothing holds the state
        if len(self.widths) == 1:
            lanes, nxt = width_logic(self.widths[0])
            m.d.comb += [self.draws[mm].eq(lanes[mm]) for mm in range(self.count)]
            m.d.comb += nxt_state.eq(nxt)
        elif self.width_onehot:
            per_width = [width_logic(k) for k in self.widths]
            sel = [self.width[i] for i in range(len(self.widths))]
            for mm in range(self.count):
                m.d.comb += self.draws[mm].eq(one_hot_select((b, lanes[mm]) for b, (lanes, _) in zip(sel, per_width)))
            m.d.comb += nxt_state.eq(one_hot_select((b, nxt) for b, (_, nxt) in zip(sel, per_width)))
            moves = self.width.any()
        else:
            hold = Signal()
            moves = ~hold
            per_width = {k: width_logic(k) for k in self.widths}
            with m.Switch(self.width):
                for k, (lanes, nxt) in per_width.items():
                    with m.Case(k):
                        m.d.comb += [self.draws[mm].eq(lanes[mm]) for mm in range(self.count)]
                        m.d.comb += nxt_state.eq(nxt)
                with m.Default():
                    m.d.comb += hold.eq(1)

        with m.If(self.load):
            m.d.sync += state.eq(Mux(self.seed == 0, 1, self.seed))
        with m.Elif(self.next & moves):
            m.d.sync += state.eq(nxt_state)
        return m

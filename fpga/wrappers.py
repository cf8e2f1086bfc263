"""Synthesis tops: :class:`~spikeforge.rtl.top.Top` with only its host streams as device pins.

Why a wrapper at all: ``Top`` also has trace ports (``obs*``, ``bp_obs*``: every FP neuron group
and every δ group) for testbenches. As top-level outputs they would keep logic alive that a board
never uses and would need ~300 pins, so the wrappers leave them unconnected (Yosys removes the
logic that only feeds them). Everything behind ``cmd``/``rsp`` stays: every memory and engine is
reachable from the host streams, so nothing real is optimised away.

* :class:`ByteTop` -- 8-bit streams (22 pins with clk/rst), so the core places on small packages
  (iCE40UP5K SG48 has 39 user IO). Bytes pack into words least significant byte first, commands
  and responses alike: the mapping docs/host-protocol.md intends for the UART bridge.
* :class:`WordTop` -- the 32-bit ``cmd``/``rsp`` streams as pins (70 pins with clk/rst); for
  packages that have them (ECP5 CABGA381).
* ``uart`` -- the project's own board top, :class:`~spikeforge.rtl.uart.UartTop` (rx, tx,
  rx_error, clk, rst), at 115200 baud for the constraint clock.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from spikeforge.config import SpikeforgeConfig
from spikeforge.rtl.top import Top

__all__ = ["ByteTop", "WordTop", "INTERFACES"]


class WordTop(wiring.Component):
    """``Top`` with its 32-bit ``cmd``/``rsp`` streams as the only ports (trace ports dropped)."""

    def __init__(self, cfg: SpikeforgeConfig):
        if not isinstance(cfg, SpikeforgeConfig):
            raise TypeError(f"WordTop needs a SpikeforgeConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        super().__init__({"cmd": In(stream.Signature(32)), "rsp": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = Top(self.cfg)
        wiring.connect(m, wiring.flipped(self.cmd), top.cmd)
        wiring.connect(m, top.rsp, wiring.flipped(self.rsp))
        return m


class ByteTop(wiring.Component):
    """``Top`` behind 8-bit ``rx``/``tx`` streams: 4 bytes per 32-bit word, least significant first.

    The packer holds one word: it accepts bytes until it has four, then offers the word on
    ``cmd`` and takes no byte until the word is accepted. The unpacker takes a ``rsp`` word only
    when it has sent the previous one, and sends its 4 bytes back to back. Both follow the stream
    rules (valid never waits for ready; payload stable while stalled).
    """

    def __init__(self, cfg: SpikeforgeConfig):
        if not isinstance(cfg, SpikeforgeConfig):
            raise TypeError(f"ByteTop needs a SpikeforgeConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = Top(self.cfg)

        # bytes -> command words
        word = Signal(32)
        have = Signal(range(5))  # bytes held; 4 = a complete word on cmd
        m.d.comb += [self.rx.ready.eq(have != 4), top.cmd.valid.eq(have == 4), top.cmd.payload.eq(word)]
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += [word.eq((word >> 8) | (self.rx.payload << 24)), have.eq(have + 1)]
        with m.If(top.cmd.valid & top.cmd.ready):
            m.d.sync += have.eq(0)

        # response words -> bytes
        out = Signal(32)
        left = Signal(range(5))  # bytes still to send
        m.d.comb += [top.rsp.ready.eq(left == 0), self.tx.valid.eq(left != 0), self.tx.payload.eq(out[:8])]
        with m.If(top.rsp.valid & top.rsp.ready):
            m.d.sync += [out.eq(top.rsp.payload), left.eq(4)]
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += [out.eq(out >> 8), left.eq(left - 1)]
        return m


def _uart_top(cfg: SpikeforgeConfig, clk_mhz: float, baud: int = 115_200):
    """:class:`~spikeforge.rtl.uart.UartTop` (the board top: 3 pins) at ``baud`` for a ``clk_mhz``
    clock; imported here so the other wrappers work on checkouts without the UART."""
    from spikeforge.rtl.uart import UartTop

    return UartTop(cfg, divisor=round(clk_mhz * 1e6 / baud))


#: interface name -> factory(cfg, clk_mhz) of the synthesis top
INTERFACES = {
    "bytes": lambda cfg, clk_mhz: ByteTop(cfg),
    "words": lambda cfg, clk_mhz: WordTop(cfg),
    "uart": _uart_top,
}

"""UART link to the host: 8N1 receiver and transmitter, the byte <-> 32-bit word bridge, and
:class:`UartTop`, the logic of a board top (the core behind a two-pin serial port).

Framing (docs/host-protocol.md §1, "UART transport"):

* 8N1: one start bit (0), eight data bits LSB first, one stop bit (1); the line idles high.
  ``divisor`` is the number of clock cycles per bit (``clk_hz / baud``, see :func:`uart_divisor`).
* Each 32-bit word travels as four bytes, least significant byte first (little-endian), in both
  directions; there is no other framing (the protocol's ``count`` field frames commands).
* Resynchronisation of the byte-to-word assembly: a word is built only from bytes that follow
  each other without an idle gap of ``idle_timeout_bits`` bit times. When the line has been idle
  that long, a partially received word is dropped, so a host that lost track of the byte
  position pauses (or sends a break, then pauses) and starts again on a word boundary.
* A framing error (stop bit 0, which includes a break) or an overrun (a byte completed while the
  previous one still waited to be taken) loses a byte: the partial word is dropped and so is
  every further byte until the line has been idle for ``idle_timeout_bits`` bit times. Each
  such error sets :class:`UartTop`'s sticky ``rx_error`` pin (cleared only by reset).

This resynchronises words, not commands: a command whose words were lost leaves the host
interface waiting for them, as on any transport (host-protocol §1).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

from spikeforge.config import SpikeforgeConfig

from .top import Top

__all__ = ["UartRx", "UartTx", "UartBridge", "UartTop", "uart_divisor", "MIN_DIVISOR",
           "DEFAULT_IDLE_TIMEOUT_BITS", "MAX_BAUD_ERROR"]

#: The receiver samples a bit DIVISOR // 2 cycles after it saw the start edge; an asynchronous edge
#: is seen up to one cycle late, so fewer than 4 cycles per bit would let that cycle move the
#: sampling point to the edge of the bit.
MIN_DIVISOR = 4
#: Line-idle time that drops a partially received word: long enough that a host's ordinary pauses
#: inside one write (USB-serial adapters send in 1 ms frames: ~115 bit times at 115200 baud) never
#: split a word, short enough to resynchronise within milliseconds (18 ms at 115200 baud).
DEFAULT_IDLE_TIMEOUT_BITS = 2048
#: Largest relative baud-rate error :func:`uart_divisor` accepts. The receiver samples the stop bit
#: 9.5 bit times after the start edge, so the two ends may differ by a few percent in total.
MAX_BAUD_ERROR = 0.02


def _refuse(owner, exc: Exception) -> Exception:
    """``exc``, after silencing Amaranth's unused-design warning for ``owner``: a refused
    construction is not a design someone forgot to use."""
    owner._MustUse__silence = True
    return exc


def _check_divisor(owner, divisor) -> int:
    who = type(owner).__name__
    if isinstance(divisor, bool) or not isinstance(divisor, int):
        raise _refuse(owner, TypeError(f"{who}: divisor (clock cycles per bit) must be an int, got {divisor!r}"))
    if divisor < MIN_DIVISOR:
        raise _refuse(owner, ValueError(f"{who}: divisor {divisor} is below the minimum of {MIN_DIVISOR} clock "
                                        f"cycles per bit (the receiver samples mid-bit)"))
    return divisor


def _check_idle_timeout(owner, bits) -> int:
    who = type(owner).__name__
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise _refuse(owner, TypeError(f"{who}: idle_timeout_bits must be an int, got {bits!r}"))
    if bits < 1:
        raise _refuse(owner, ValueError(f"{who}: idle_timeout_bits must be at least 1 bit time, got {bits}"))
    return bits


def uart_divisor(clk_hz: float, baud: float) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``; raises ValueError if the nearest integer
    divisor misses the baud rate by more than :data:`MAX_BAUD_ERROR` or is below
    :data:`MIN_DIVISOR`."""
    if not clk_hz > 0 or not baud > 0:
        raise ValueError(f"uart_divisor: clock {clk_hz!r} Hz and baud {baud!r} must be positive")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"uart_divisor: {clk_hz} Hz gives {clk_hz / baud:.2f} cycles per bit at {baud} baud, "
                         f"below the minimum of {MIN_DIVISOR}")
    error = abs(clk_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"uart_divisor: {clk_hz} Hz / {divisor} = {clk_hz / divisor:.0f} baud misses {baud} baud "
                         f"by {error:.1%} (more than {MAX_BAUD_ERROR:.0%})")
    return divisor


class UartRx(wiring.Component):
    """8N1 receiver.

    ``rx`` passes a 2-FF synchronizer (it is asynchronous to the clock). A falling edge starts a
    frame; the start bit is checked in its middle (still 0, else it was a glitch and is ignored),
    then the data bits and the stop bit are sampled mid-bit, ``divisor`` cycles apart.

    * ``data``: received bytes. The line cannot wait, so a byte that completes while the previous
      one has not been taken is dropped (the waiting payload never changes) and ``overrun``
      pulses.
    * ``frame_error``: pulses when a stop bit reads 0; the byte is dropped, and the receiver
      waits for the line to go high before it looks for the next start bit (a break gives one
      error, not one per frame time).
    * ``idle_timeout``: pulses once when, after a frame, the line has stayed idle (and no byte has
      waited at ``data``) for ``idle_timeout_bits`` bit times; re-armed by the next frame.
    """

    def __init__(self, divisor: int, idle_timeout_bits: int = DEFAULT_IDLE_TIMEOUT_BITS):
        self.divisor = _check_divisor(self, divisor)
        self.idle_timeout_bits = _check_idle_timeout(self, idle_timeout_bits)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
            "idle_timeout": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor
        line = Signal(init=1)  # rx after the synchronizer; idles high like the line
        m.submodules.sync = cdc.FFSynchronizer(self.rx, line, init=1)

        bit_timer = Signal(range(divisor))  # cycles to the next sampling point
        bits_left = Signal(range(8))  # data bits still to sample after the current one
        shift = Signal(8)

        # the waiting byte leaves when taken; a new byte (below) may replace it in the same cycle
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        idle_limit = divisor * self.idle_timeout_bits
        idle_cycles = Signal(range(idle_limit))
        idle_armed = Signal()  # a frame ended and no timeout has been reported since
        end_of_frame = Signal()

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += bit_timer.eq(divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(bit_timer == 0):
                    with m.If(line):
                        m.next = "IDLE"  # high again mid-bit: a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [bit_timer.eq(divisor - 1), bits_left.eq(7)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += bit_timer.eq(bit_timer - 1)
            with m.State("DATA"):
                with m.If(bit_timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bit_timer.eq(divisor - 1)]  # LSB first
                    m.d.sync += bits_left.eq(bits_left - 1)
                    with m.If(bits_left == 0):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += bit_timer.eq(bit_timer - 1)
            with m.State("STOP"):
                with m.If(bit_timer == 0):
                    m.d.comb += end_of_frame.eq(1)
                    with m.If(line):
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                        m.next = "IDLE"  # mid stop bit: the next start edge may come in half a bit
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "WAIT_HIGH"
                with m.Else():
                    m.d.sync += bit_timer.eq(bit_timer - 1)
            with m.State("WAIT_HIGH"):
                with m.If(line):
                    m.next = "IDLE"
        line_idle = fsm.ongoing("IDLE") & ~self.data.valid

        with m.If(end_of_frame):
            m.d.sync += [idle_armed.eq(1), idle_cycles.eq(0)]
        with m.Elif(~line_idle):
            m.d.sync += idle_cycles.eq(0)
        with m.Elif(idle_armed):
            with m.If(idle_cycles == idle_limit - 1):
                m.d.comb += self.idle_timeout.eq(1)
                m.d.sync += [idle_armed.eq(0), idle_cycles.eq(0)]
            with m.Else():
                m.d.sync += idle_cycles.eq(idle_cycles + 1)
        return m


class UartTx(wiring.Component):
    """8N1 transmitter: each byte taken from ``data`` goes out as start bit, 8 data bits LSB
    first, stop bit, ``divisor`` cycles each. ``tx`` comes straight from a register (no glitches)
    and idles high. ``data.ready`` is high when idle and in the last cycle of a stop bit, so
    back-to-back bytes go out with no gap (exactly 10 bit times per byte)."""

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor
        # bit 0 is on the line; ones shift in behind the stop bit, so an idle line reads high
        frame = Signal(10, init=0x3FF)
        bit_timer = Signal(range(divisor))
        bits_left = Signal(range(11))  # bits of the frame still to send, the one on the line included
        m.d.comb += self.tx.eq(frame[0])

        with m.If(bits_left != 0):
            with m.If(bit_timer == 0):
                m.d.sync += [frame.eq(Cat(frame[1:], Const(1, 1))), bit_timer.eq(divisor - 1),
                             bits_left.eq(bits_left - 1)]
            with m.Else():
                m.d.sync += bit_timer.eq(bit_timer - 1)
        m.d.comb += self.data.ready.eq((bits_left == 0) | ((bits_left == 1) & (bit_timer == 0)))
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [frame.eq(Cat(Const(0, 1), self.data.payload, Const(1, 1))), bit_timer.eq(divisor - 1),
                         bits_left.eq(10)]
        return m


class UartBridge(wiring.Component):
    """Bytes <-> 32-bit words, little-endian: the first byte received is bits 7..0 of the word on
    ``cmd``, and each word taken from ``rsp`` goes to ``tx_bytes`` as bits 7..0, 15..8, 23..16,
    31..24.

    ``line_idle`` (a pulse, from :attr:`UartRx.idle_timeout`) drops a partially assembled word and
    ends discarding. ``line_error`` (a pulse: the receiver lost a byte) drops the partial word and
    discards every byte until ``line_idle``; ``discarding`` shows that state. The word is
    assembled in ``cmd``'s own register: while an assembled word waits there the bridge takes no
    byte, and one more byte can wait in the receiver. The host interface takes a word within a
    few cycles while it reads a command; a host that sends the next command before the response
    has arrived can overrun the receiver, which then says so.
    """

    def __init__(self):
        super().__init__({
            "rx_bytes": In(stream.Signature(8)),
            "cmd": Out(stream.Signature(32)),
            "rsp": In(stream.Signature(32)),
            "tx_bytes": Out(stream.Signature(8)),
            "line_error": In(1),
            "line_idle": In(1),
            "discarding": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rx_bytes, cmd, rsp, tx_bytes = self.rx_bytes, self.cmd, self.rsp, self.tx_bytes

        # ---- bytes -> words ---------------------------------------------------------------------
        # the bytes shift into the word register from the top, so the first ends up in bits 7..0.
        # One register: the next word's bytes wait (in the receiver) until the host took the word
        bytes_held = Signal(range(4))
        last_byte = bytes_held == 3
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += cmd.valid.eq(0)
        m.d.comb += rx_bytes.ready.eq(self.discarding | ~cmd.valid)
        with m.If(rx_bytes.valid & rx_bytes.ready & ~self.discarding):
            m.d.sync += [cmd.payload.eq(Cat(cmd.payload[8:], rx_bytes.payload)), bytes_held.eq(bytes_held + 1)]
            with m.If(last_byte):
                m.d.sync += cmd.valid.eq(1)
        # after the byte logic, so a resync wins over a byte taken in the same cycle
        with m.If(self.line_error):
            m.d.sync += [bytes_held.eq(0), self.discarding.eq(1)]
        with m.Elif(self.line_idle):
            m.d.sync += [bytes_held.eq(0), self.discarding.eq(0)]

        # ---- words -> bytes ---------------------------------------------------------------------
        # the bytes are taken straight from the word on rsp, which its producer holds until
        # ready (the stream rule): rsp is taken with its last byte, and no copy of it is kept
        sent = Signal(range(4), name="bytes_sent")
        m.d.comb += [tx_bytes.valid.eq(rsp.valid), tx_bytes.payload.eq(rsp.payload.word_select(sent, 8)),
                     rsp.ready.eq(tx_bytes.ready & (sent == 3))]
        with m.If(tx_bytes.valid & tx_bytes.ready):
            m.d.sync += sent.eq(sent + 1)
        return m


class UartTop(wiring.Component):
    """The core (:class:`~spikeforge.rtl.top.Top`) behind a UART: pins ``rx`` (from the host)
    and ``tx`` (to the host), plus ``rx_error``, sticky from the first framing error or overrun
    until reset (for an LED or a logic analyser; the host sees a lost byte as a missing
    response). No platform code: a board file adds the clock, reset and pin constraints."""

    def __init__(self, cfg: SpikeforgeConfig, divisor: int, idle_timeout_bits: int = DEFAULT_IDLE_TIMEOUT_BITS):
        if not isinstance(cfg, SpikeforgeConfig):
            raise _refuse(self, TypeError(f"UartTop needs a SpikeforgeConfig, got {type(cfg).__name__}"))
        self.cfg = cfg
        self.divisor = _check_divisor(self, divisor)
        self.idle_timeout_bits = _check_idle_timeout(self, idle_timeout_bits)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "rx_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UartRx(self.divisor, self.idle_timeout_bits)
        m.submodules.uart_tx = tx = UartTx(self.divisor)
        m.submodules.bridge = bridge = UartBridge()
        m.submodules.top = top = Top(self.cfg)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        wiring.connect(m, rx.data, bridge.rx_bytes)
        wiring.connect(m, bridge.cmd, top.cmd)
        wiring.connect(m, top.rsp, bridge.rsp)
        wiring.connect(m, bridge.tx_bytes, tx.data)
        lost_byte = rx.frame_error | rx.overrun
        m.d.comb += [bridge.line_error.eq(lost_byte), bridge.line_idle.eq(rx.idle_timeout)]
        with m.If(lost_byte):
            m.d.sync += self.rx_error.eq(1)
        return m

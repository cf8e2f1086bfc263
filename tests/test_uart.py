"""UART blocks (rtl/uart.py) in Amaranth's simulator: every byte and word is compared exactly with
the Python reference encoding of sim/uart_transport.py (frame_bits, words_to_bytes)."""

import random

import pytest
from amaranth import Module

from spikeforge.rtl.uart import (DEFAULT_IDLE_TIMEOUT_BITS, MIN_DIVISOR, UartBridge, UartRx, UartTop, UartTx,
                                 uart_divisor)
from spikeforge.sim.amaranth_bench import send, simulate
from spikeforge.sim.uart_transport import bytes_to_words, frame_bits, words_to_bytes

# ---- stimulus and monitors ---------------------------------------------------------------------


def line_levels(bits: list[int], period: float, lead: float = 0.0, tail: int = 0) -> list[int]:
    """Level of a line per clock cycle: ``bits`` of ``period`` cycles each (fractional periods model
    a baud-rate error), starting ``lead`` cycles in, idle high before and for ``tail`` cycles after."""
    end = lead + len(bits) * period
    return [bits[int((c - lead) // period)] if lead <= c < end else 1 for c in range(int(end) + 1 + tail)]


def frames(data: bytes) -> list[int]:
    return [level for b in data for level in frame_bits(b)]


def drive(pin, levels):
    async def bench(ctx):
        for level in levels:
            ctx.set(pin, level)
            await ctx.tick()
    return bench


def pulses(signal, log: list[int]):
    """Background bench: the cycles in which ``signal`` is high."""
    async def bench(ctx):
        cycle = 0
        async for _, _, value in ctx.tick().sample(signal):
            if value:
                log.append(cycle)
            cycle += 1
    return bench


def collect(port, log: list, rng: random.Random | None = None, stall: float = 0.0, enabled=lambda: True):
    """Background bench: takes stream items (``ready`` low with probability ``stall``, or while
    ``enabled()`` is false) and appends ``(cycle, payload)``."""
    async def bench(ctx):
        cycle = 0
        while True:
            ready = enabled() and (rng is None or rng.random() >= stall)
            ctx.set(port.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
            if valid and ready:
                log.append((cycle, int(payload)))
            cycle += 1
    return bench


def stable_while_stalled(port, violations: list):
    """Background bench: the stream rules -- once valid, a producer keeps valid and payload until
    the item is taken."""
    async def bench(ctx):
        held = None
        async for _, _, valid, ready, payload in ctx.tick().sample(port.valid, port.ready, port.payload):
            if held is not None and (not valid or int(payload) != held):
                violations.append((valid, int(payload), held))
            held = int(payload) if valid and not ready else None
    return bench


# ---- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [UartRx, UartTx])
@pytest.mark.parametrize("divisor", [0, -4, MIN_DIVISOR - 1])
def test_divisor_below_minimum_is_a_value_error(cls, divisor):
    with pytest.raises(ValueError, match=f"divisor {divisor} is below the minimum of {MIN_DIVISOR}"):
        cls(divisor)


@pytest.mark.parametrize("divisor", [4.0, "8", True, None])
def test_divisor_must_be_an_int(divisor):
    with pytest.raises(TypeError, match="divisor"):
        UartRx(divisor)
    with pytest.raises(TypeError, match="divisor"):
        UartTx(divisor)


def test_top_and_idle_timeout_parameters_are_checked():
    from spikeforge.sim.scenario import small_cfg

    with pytest.raises(ValueError, match="divisor 2"):
        UartTop(small_cfg(), 2)
    with pytest.raises(TypeError, match="SpikeforgeConfig"):
        UartTop({"layers": [2, 2]}, 8)
    with pytest.raises(ValueError, match="idle_timeout_bits must be at least 1"):
        UartRx(8, idle_timeout_bits=0)
    with pytest.raises(TypeError, match="idle_timeout_bits"):
        UartTop(small_cfg(), 8, idle_timeout_bits=1.5)


def test_uart_divisor_rounds_and_refuses_a_bad_baud_rate():
    assert uart_divisor(12e6, 115200) == 104  # 0.16 % fast
    assert uart_divisor(48_000_000, 3_000_000) == 16
    with pytest.raises(ValueError, match="misses 115200 baud by 3.5%"):
        uart_divisor(1e6, 115200)  # 1e6 / 9 = 111111 baud
    with pytest.raises(ValueError, match="below the minimum"):
        uart_divisor(10e6, 3e6)
    with pytest.raises(ValueError, match="positive"):
        uart_divisor(12e6, 0)


# ---- transmitter ----------------------------------------------------------------------------------


@pytest.mark.parametrize("divisor", [4, 5])
def test_tx_line_is_exact_8n1_back_to_back(divisor):
    """Bytes offered back to back leave as 10-bit frames of exactly ``divisor`` cycles per bit,
    with no idle time between frames."""
    data = bytes([0x00, 0xFF, 0x55, 0xA3, 0x01, 0x80])
    tx = UartTx(divisor)
    line: list[int] = []

    async def producer(ctx):
        for b in data:
            await send(ctx, tx.data, b, random.Random(0), gap=0.0)
        for _ in range(10 * divisor + 2):  # the last frame leaves the line
            await ctx.tick()

    async def sampler(ctx):
        async for _, _, level in ctx.tick().sample(tx.tx):
            line.append(int(level))

    simulate(tx, producer, background=[sampler])
    first = line.index(0)
    assert all(line[:first]), "the idle line must be high"
    expected = [bit for bit in frames(data) for _ in range(divisor)]
    assert line[first:first + len(expected)] == expected


# ---- receiver -------------------------------------------------------------------------------------


@pytest.mark.parametrize("divisor", [4, 7])
def test_loopback_random_bytes_with_backpressure(divisor):
    """Random bytes through Tx -> line -> Rx with random gaps in, random backpressure out: every
    byte arrives once, in order, with no framing error or overrun; both streams obey the rules."""
    rng = random.Random(divisor)
    sent = bytes(rng.randrange(256) for _ in range(48))
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, errors, violations = [], [], []

    async def producer(ctx):
        for b in sent:
            await send(ctx, tx.data, b, rng, gap=0.4)
        while len(got) < len(sent):
            await ctx.tick()

    simulate(m, producer, background=[collect(rx.data, got, random.Random(1), stall=0.6),
                                      pulses(rx.frame_error, errors), pulses(rx.overrun, errors),
                                      stable_while_stalled(rx.data, violations)])
    assert bytes(b for _, b in got) == sent
    assert errors == [] and violations == []


@pytest.mark.parametrize("divisor", [4, 8])
@pytest.mark.parametrize("baud_error", [-0.02, 0.0, 0.02])
def test_rx_samples_mid_bit_despite_baud_error_and_phase(divisor, baud_error):
    """A host 2 % fast or slow, starting at an arbitrary phase of the clock, is received exactly."""
    rng = random.Random(divisor * 100 + int(baud_error * 1000))
    data = bytes(rng.randrange(256) for _ in range(12)) + b"\x00\xff"
    rx = UartRx(divisor)
    got, errors = [], []
    levels = line_levels(frames(data), divisor * (1 + baud_error), lead=3 + rng.random(), tail=3 * divisor)
    simulate(rx, drive(rx.rx, levels), background=[collect(rx.data, got), pulses(rx.frame_error, errors)])
    assert bytes(b for _, b in got) == data and errors == []


def test_rx_ignores_a_glitch_shorter_than_half_a_bit():
    divisor = 8
    rx = UartRx(divisor)
    got, errors = [], []
    levels = [1] * 5 + [0] * (divisor // 2 - 1) + [1] * 3 * divisor + line_levels(frame_bits(0x5A), divisor, tail=divisor)
    simulate(rx, drive(rx.rx, levels), background=[collect(rx.data, got), pulses(rx.frame_error, errors)])
    assert [b for _, b in got] == [0x5A] and errors == []


def test_rx_framing_error_and_break():
    """A stop bit of 0 pulses ``frame_error`` and delivers nothing; a break (line low for several
    frame times) is one framing error, not one per frame; the next good byte is received."""
    divisor = 4
    rx = UartRx(divisor)
    bad_stop = frame_bits(0x3C)[:-1] + [0]
    levels = line_levels(bad_stop + [1, 1] + [0] * 35 + [1] * 3 + frame_bits(0xC3), divisor, lead=2, tail=divisor)
    got, errors = [], []
    simulate(rx, drive(rx.rx, levels), background=[collect(rx.data, got), pulses(rx.frame_error, errors)])
    assert len(errors) == 2, f"framing errors at cycles {errors}"
    assert [b for _, b in got] == [0xC3]


def test_rx_overrun_keeps_the_waiting_byte():
    """Nobody takes the bytes: the first one waits unchanged, the second is dropped and reported."""
    divisor = 4
    rx = UartRx(divisor)
    levels = line_levels(frames(b"\x11\x22\x33"), divisor, tail=divisor)
    overruns, violations = [], []
    final = {}

    async def bench(ctx):
        await drive(rx.rx, levels)(ctx)
        final["valid"], final["payload"] = ctx.get(rx.data.valid), ctx.get(rx.data.payload)

    simulate(rx, bench, background=[pulses(rx.overrun, overruns), stable_while_stalled(rx.data, violations)])
    assert (final["valid"], final["payload"]) == (1, 0x11)
    assert len(overruns) == 2 and violations == []


def test_rx_idle_timeout_once_per_pause_and_not_while_a_byte_waits():
    divisor, idle_bits = 4, 5
    limit = divisor * idle_bits
    rx = UartRx(divisor, idle_timeout_bits=idle_bits)
    timeouts: list[int] = []
    taking = {"on": True}
    pause = 4 * limit
    # frame 1, a long pause, frame 2 left waiting (not taken) for a long pause, then taken
    frame1 = line_levels(frame_bits(0x01), divisor, lead=limit + 7, tail=pause)
    frame2 = line_levels(frame_bits(0x02), divisor, tail=pause)
    end1 = len(frame1) - pause  # cycle just after the first stop bit ends on the line

    async def bench(ctx):
        await drive(rx.rx, frame1)(ctx)
        taking["on"] = False
        await drive(rx.rx, frame2)(ctx)
        taking["on"] = True
        for _ in range(pause):
            await ctx.tick()

    got = []
    simulate(rx, bench, background=[pulses(rx.idle_timeout, timeouts),
                                    collect(rx.data, got, enabled=lambda: taking["on"])])
    start2 = len(frame1) + len(frame2)  # frame 2's byte is taken from here on
    assert [b for _, b in got] == [1, 2]
    assert len(timeouts) == 2, f"idle timeouts at cycles {timeouts}"
    # none after reset before any frame; the first `limit` cycles after frame 1 (+ sync/sampling slack)
    assert end1 + limit - divisor <= timeouts[0] <= end1 + limit + divisor
    # none while byte 2 waited; `limit` cycles after it was taken
    assert start2 + limit - 2 <= timeouts[1] <= start2 + limit + 2


# ---- bridge ---------------------------------------------------------------------------------------


def test_bridge_assembles_little_endian_words_under_backpressure():
    rng = random.Random(5)
    words = [rng.getrandbits(32) for _ in range(24)] + [0x01020304, 0xFF000000]
    data = words_to_bytes(words)
    assert data[-8:-4] == b"\x04\x03\x02\x01"
    bridge = UartBridge()
    got, violations = [], []

    async def producer(ctx):
        for b in data:
            await send(ctx, bridge.rx_bytes, b, rng, gap=0.3)
        while len(got) < len(words):
            await ctx.tick()

    simulate(bridge, producer, background=[collect(bridge.cmd, got, random.Random(6), stall=0.7),
                                           stable_while_stalled(bridge.cmd, violations)])
    assert [w for _, w in got] == words and violations == []


def test_bridge_serializes_words_lsb_byte_first():
    rng = random.Random(7)
    words = [rng.getrandbits(32) for _ in range(16)] + [0xA1B2C3D4]
    bridge = UartBridge()
    got, violations = [], []

    async def producer(ctx):
        for w in words:
            await send(ctx, bridge.rsp, w, rng, gap=0.5)
        while len(got) < 4 * len(words):
            await ctx.tick()

    simulate(bridge, producer, background=[collect(bridge.tx_bytes, got, random.Random(8), stall=0.5),
                                           stable_while_stalled(bridge.tx_bytes, violations)])
    assert bytes(b for _, b in got) == words_to_bytes(words)
    assert bytes(b for _, b in got)[-4:] == b"\xd4\xc3\xb2\xa1" and violations == []


def test_bridge_resync_rules():
    """``line_idle`` drops a partial word; ``line_error`` drops it and discards bytes until
    ``line_idle``; complete words are unaffected."""
    bridge = UartBridge()
    got = []
    rng = random.Random(0)
    seen = {}

    async def pulse(ctx, port):
        ctx.set(port, 1)
        await ctx.tick()
        ctx.set(port, 0)

    async def bench(ctx):
        for b in words_to_bytes([0x11111111])[:2]:  # half a word, then a pause
            await send(ctx, bridge.rx_bytes, b, rng, 0)
        await pulse(ctx, bridge.line_idle)
        for b in words_to_bytes([0x44332211]):
            await send(ctx, bridge.rx_bytes, b, rng, 0)
        await send(ctx, bridge.rx_bytes, 0x99, rng, 0)  # one byte, then the receiver loses one
        await pulse(ctx, bridge.line_error)
        seen["discarding"] = ctx.get(bridge.discarding)
        for b in words_to_bytes([0xDEADBEEF, 0x12345678])[:7]:  # after the error: all discarded
            await send(ctx, bridge.rx_bytes, b, rng, 0)
        await pulse(ctx, bridge.line_idle)
        seen["after_idle"] = ctx.get(bridge.discarding)
        for b in words_to_bytes([0x87654321]):
            await send(ctx, bridge.rx_bytes, b, rng, 0)
        for _ in range(4):
            await ctx.tick()

    simulate(bridge, bench, background=[collect(bridge.cmd, got)])
    assert [w for _, w in got] == [0x44332211, 0x87654321]
    assert seen == {"discarding": 1, "after_idle": 0}


# ---- the board top's logic -----------------------------------------------------------------------


def uart_decoder(pin, divisor: int, out: bytearray):
    """Background bench: the bytes sent on ``pin``, sampled mid-bit (the reference receiver)."""
    async def bench(ctx):
        countdown, bits = None, []  # cycles to the next mid-bit sample; None: waiting for a start bit
        async for _, _, level in ctx.tick().sample(pin):
            if countdown is None:
                if not level:
                    countdown, bits = divisor // 2 + divisor, []  # to the middle of data bit 0
                continue
            countdown -= 1
            if countdown == 0:
                bits.append(int(level))
                countdown = divisor
                if len(bits) == 9:
                    assert bits[8] == 1, f"stop bit 0 after {bytes(out).hex()}"
                    out.append(sum(b << i for i, b in enumerate(bits[:8])))
                    countdown = None
    return bench


def test_uart_top_answers_a_nop_and_keeps_rx_error():
    """Whole path in Amaranth's simulator: a NOP over the rx pin is answered on the tx pin; a byte
    with a bad stop bit sets the sticky ``rx_error``, and after an idle pause the link works again."""
    from spikeforge.rtl.protocol import Error, Op, command, split_response
    from spikeforge.sim.scenario import small_cfg

    divisor, idle_bits = 4, 16
    top = UartTop(small_cfg(), divisor, idle_timeout_bits=idle_bits)
    received = bytearray()
    rx_error: list[int] = []

    async def send_line(ctx, levels):
        for level in levels:
            ctx.set(top.rx, level)
            await ctx.tick()

    async def nop(ctx):
        received.clear()
        await send_line(ctx, line_levels(frames(words_to_bytes(command(Op.NOP))), divisor, lead=1))
        for _ in range(20 * 10 * divisor):
            if len(received) >= 4:
                break
            await ctx.tick()
        return bytes_to_words(bytes(received))

    async def bench(ctx):
        first = await nop(ctx)
        rx_error.append(ctx.get(top.rx_error))
        await send_line(ctx, line_levels(frame_bits(0x00)[:-1] + [0, 1], divisor))  # stop bit 0
        rx_error.append(ctx.get(top.rx_error))
        early = await nop(ctx)  # right after the error: discarded, no answer
        await send_line(ctx, [1] * divisor * (idle_bits + 2))
        second = await nop(ctx)
        rx_error.append(ctx.get(top.rx_error))
        assert [split_response(w) for w in first + second] == [(Error.OK, Op.NOP, 0)] * 2
        assert early == []

    simulate(top, bench, background=[uart_decoder(top.tx, divisor, received)])
    assert rx_error == [0, 1, 1]


def test_default_idle_timeout_is_longer_than_a_usb_frame_at_fast_rates():
    # 1 ms USB frames at 1 Mbaud are 1000 bit times: a host pausing between USB packets must not split words
    assert DEFAULT_IDLE_TIMEOUT_BITS > 1000

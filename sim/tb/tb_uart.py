"""cocotb bench: the UART board top (:class:`~spikeforge.rtl.uart.UartTop`) under Verilator, driven
over its two serial pins by a model of the host's UART, through the same
:class:`~spikeforge.sim.uart_transport.UartTransport` and :class:`~spikeforge.sim.driver.Client` a
real host runs over pyserial.

The host UART model bit-bangs ``rx`` (8N1, the divisor's bit time scaled by a small random baud
error, each byte started at a random sub-cycle phase: the pin is asynchronous to the clock) and
decodes ``tx`` mid-bit after each start edge. :class:`CocotbBytePort` gives the blocking transport
the ``write(bytes)`` / ``read(n)`` of a serial port, with a read timeout in simulated time; the
client runs in a cocotb ``bridge`` thread as in :mod:`spikeforge.sim.tb.tb_core`.

Arguments (``$SPIKEFORGE_COSIM_ARGS``, written by :func:`spikeforge.sim.cosim_uart.run_uart`)::

    config              SpikeforgeConfig.to_dict() of the build
    divisor             clock cycles per bit of the build
    idle_timeout_bits   the build's resynchronisation pause
    seed                weights, pixels, labels, byte gaps, phases, baud error
    replay              one-line command that reruns this simulation
    out                 JSON file the tests add their results to
"""

from __future__ import annotations

import json
import random
from collections import deque
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.task import bridge, resume
from cocotb.triggers import Event, FallingEdge, First, RisingEdge, Timer

from spikeforge.config import SpikeforgeConfig
from spikeforge.sim.driver import Client
from spikeforge.sim.uart_transport import UartTransport, frame_bits

CLOCK_PS = 10_000
#: simulated time a read may wait for a response (TRAIN on the small config takes far less)
READ_TIMEOUT_CYCLES = 2_000_000
#: host baud rate off by up to this fraction (either way); the receiver tolerates about 2 %
MAX_BAUD_ERROR = 0.01


class HostUart:
    """The host's UART: drives ``rx``, decodes ``tx`` into :attr:`received`."""

    def __init__(self, dut, divisor: int, rng: random.Random, gap: float = 0.1):
        self.dut, self.rng, self.gap = dut, rng, gap
        self.baud_error = rng.uniform(-MAX_BAUD_ERROR, MAX_BAUD_ERROR)
        self.bit_ps = round(divisor * CLOCK_PS * (1 + self.baud_error))
        self.received: deque[int] = deque()
        self.arrived = Event()
        self.stop_bit_errors = 0
        dut.rx.value = 1
        self._decoder = cocotb.start_soon(self._decode())

    async def send(self, data: bytes) -> None:
        for byte in data:
            await self.send_levels(frame_bits(byte))

    async def send_levels(self, levels: list[int]) -> None:
        """Bit times of ``levels``, after a random idle time (usually under one clock cycle, now
        and then a few bit times: far below the idle timeout)."""
        idle_ps = self.rng.randrange(CLOCK_PS)
        if self.rng.random() < self.gap:
            idle_ps += self.rng.randint(1, 3) * self.bit_ps
        self.dut.rx.value = 1
        if idle_ps:
            await Timer(idle_ps, "ps")
        for level in levels:
            self.dut.rx.value = level
            await Timer(self.bit_ps, "ps")
        self.dut.rx.value = 1

    async def pause(self, bit_times: int) -> None:
        self.dut.rx.value = 1
        await Timer(bit_times * self.bit_ps, "ps")

    async def _decode(self) -> None:
        tx = self.dut.tx
        while True:
            await FallingEdge(tx)
            await Timer(self.bit_ps // 2, "ps")
            if int(tx.value) != 0:
                continue  # not a start bit (the core's tx never glitches; a receiver checks anyway)
            bits = []
            for _ in range(9):
                await Timer(self.bit_ps, "ps")
                bits.append(int(tx.value))
            if bits[8] != 1:
                self.stop_bit_errors += 1
                continue
            self.received.append(sum(b << i for i, b in enumerate(bits[:8])))
            self.arrived.set()


class CocotbBytePort:
    """``write(bytes)`` / ``read(n)`` of a serial port for code in a bridge thread; ``read``
    returns what arrived within ``timeout_cycles`` of simulated time (maybe nothing), as pyserial
    does within its ``timeout``."""

    def __init__(self, uart: HostUart, timeout_cycles: int = READ_TIMEOUT_CYCLES):
        self.uart = uart
        self.timeout_cycles = timeout_cycles
        self.write = resume(self._write)
        self.read = resume(self._read)

    async def _write(self, data: bytes) -> int:
        await self.uart.send(bytes(data))
        return len(data)

    async def _read(self, n: int) -> bytes:
        uart = self.uart
        deadline = get_sim_time("ps") + self.timeout_cycles * CLOCK_PS
        out = bytearray()
        while len(out) < n:
            if uart.received:
                out.append(uart.received.popleft())
                continue
            remaining = deadline - get_sim_time("ps")
            if remaining <= 0:
                break
            uart.arrived.clear()
            timer = Timer(remaining, "ps")
            if await First(uart.arrived.wait(), timer) is timer:
                break
        return bytes(out)


class TB:
    def __init__(self, dut, args: dict):
        self.dut, self.args = dut, args
        self.cfg = SpikeforgeConfig.from_dict(args["config"])
        self.seed = int(args.get("seed", 0))
        self.divisor = int(args["divisor"])
        self.idle_timeout_bits = int(args["idle_timeout_bits"])
        self.replay = args.get("replay", "?")
        self.rng = random.Random(self.seed)

    async def start(self) -> None:
        Clock(self.dut.clk, CLOCK_PS, unit="ps").start()
        self.dut.rx.value = 1
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.uart = HostUart(self.dut, self.divisor, self.rng)
        self.port = CocotbBytePort(self.uart)
        self.client = Client(UartTransport(self.port), self.cfg)

    def fail(self, what: str) -> AssertionError:
        return AssertionError(f"seed {self.seed} (host baud error {self.uart.baud_error:+.2%}): {what}\n"
                              f"  replay: {self.replay}")

    def check_link_clean(self) -> None:
        if self.uart.stop_bit_errors:
            raise self.fail(f"{self.uart.stop_bit_errors} frames from the core had a bad stop bit")

    def write_out(self, name: str, result: dict) -> None:
        if self.args.get("out"):
            path = Path(self.args["out"])
            data = json.loads(path.read_text()) if path.is_file() else {}
            data[name] = result
            path.write_text(json.dumps(data, indent=2) + "\n")


def _args() -> dict:
    from spikeforge.sim.runner import cosim_args

    return cosim_args()


@cocotb.test()
async def protocol(dut) -> None:
    """INFO, one trained mini-batch exact against the golden model, a refused command's sticky
    error registers: all over the serial pins."""
    import torch

    from spikeforge.golden import GoldenBackend
    from spikeforge.golden.backend import update_seed
    from spikeforge.rtl.protocol import Error, info_words
    from spikeforge.sim.amaranth_bench import assert_same

    tb = TB(dut, _args())
    await tb.start()
    cfg, seed = tb.cfg, tb.seed
    L = cfg.network.layers
    batch = cfg.training.batch_size
    g = torch.Generator().manual_seed(seed)
    wmax = (1 << (cfg.formats.weight_bits - 1)) - 1
    w0 = [torch.randint(-wmax - 1, wmax + 1, (L[l + 1], L[l]), generator=g) for l in range(len(L) - 1)]
    pixels = torch.randint(0, 1 << cfg.formats.pixel_bits, (batch, L[0]), generator=g)
    seeds = torch.randint(1, 1 << 31, (batch,), generator=g)
    labels = torch.randint(0, L[-1], (batch,), generator=g)
    gold = GoldenBackend(cfg, w0)
    gold_predictions = gold.train_batch(pixels, seeds, labels)
    BAD_OPCODE = 0x7E

    def job() -> dict:
        c = tb.client
        info = c.info()
        if info != info_words(cfg):
            raise tb.fail(f"INFO reads {info}, config gives {info_words(cfg)}")
        c.clear_error()
        c.load_weights(w0)
        c.set_config(lr_shift=cfg.training.lr_shift, update_lfsr_state=update_seed(cfg))
        predictions = []
        for b in range(batch):
            c.sample(pixels[b].tolist(), int(labels[b]), int(seeds[b]))
            predictions.append(c.train())
        c.update()
        weights = c.weights()
        assert_same([(f"updated weights of layer {l}", got, want) for l, (got, want) in enumerate(zip(weights, gold.weights))]
                    + [("TRAIN predictions", torch.tensor(predictions), gold_predictions)], seed, tb.replay,
                    index_names=("row", "col"))

        status, data = c.call(BAD_OPCODE, 0, 2, 0, [1, 2], check=False)  # payload drained, then refused
        st = c.status()
        sticky = (st["error_code"], st["error_opcode"], st["error_count"])
        if (status, data) != (Error.BAD_OPCODE, []) or sticky != (Error.BAD_OPCODE, BAD_OPCODE, 1):
            raise tb.fail(f"bad opcode {BAD_OPCODE:#x}: answered status {status} data {data}, "
                          f"sticky (code, opcode, count) {sticky}")
        c.clear_error()
        if c.status()["error_code"] != 0:
            raise tb.fail("CLEAR_ERROR did not clear the sticky error")
        return {"predictions": predictions, "weights_compared": sum(w.numel() for w in weights)}

    result = await bridge(job)()
    tb.check_link_clean()
    if int(dut.rx_error.value) != 0:
        raise tb.fail("rx_error set on a clean line")
    tb.write_out("protocol", {**result, "baud_error": tb.uart.baud_error})


@cocotb.test()
async def line_errors(dut) -> None:
    """Resynchronisation: half a word then a pause; a framing error (the NOP right behind it is
    discarded, the sticky ``rx_error`` is set); a break. After each, a pause and the link works."""
    from spikeforge.rtl.protocol import Error, Op, command
    from spikeforge.sim.uart_transport import words_to_bytes

    tb = TB(dut, _args())
    await tb.start()
    c, uart = tb.client, tb.uart
    # the host times its pause by its own clock: leave a margin for its baud error
    resync_pause = int(tb.idle_timeout_bits * (1 + 2 * MAX_BAUD_ERROR)) + 2

    async def nop_ok(after: str) -> None:
        status, _ = await bridge(c.call)(Op.NOP, check=False)
        if status != Error.OK:
            raise tb.fail(f"NOP after {after} answered status {status}")

    await nop_ok("reset")
    if int(dut.rx_error.value) != 0:
        raise tb.fail("rx_error set after reset")

    await uart.send(words_to_bytes(command(Op.NOP))[:2])  # half a word ...
    await uart.pause(resync_pause)  # ... dropped by the idle timeout
    await nop_ok("half a word and a pause")
    if int(dut.rx_error.value) != 0:
        raise tb.fail("a pause set rx_error")

    await uart.send_levels(frame_bits(0xA5)[:-1] + [0])  # stop bit 0: a framing error
    tb.port.timeout_cycles = 200 * tb.divisor * 10  # no answer expected: wait 200 byte times
    try:
        await bridge(c.call)(Op.NOP)
        raise tb.fail("a NOP sent right after a framing error was answered: it should have been discarded")
    except TimeoutError as e:
        if "NOP" not in str(e):
            raise tb.fail(f"the timeout does not name the command: {e}") from None
    tb.port.timeout_cycles = READ_TIMEOUT_CYCLES
    if int(dut.rx_error.value) != 1:
        raise tb.fail("rx_error not set by a framing error")
    await uart.pause(resync_pause)
    await nop_ok("a framing error and a pause")

    await uart.send_levels([0] * 35)  # a break: 3.5 frame times low
    await uart.pause(resync_pause)
    info = await bridge(c.info)()
    if int(dut.rx_error.value) != 1:
        raise tb.fail("rx_error is not sticky")
    tb.check_link_clean()
    tb.write_out("line_errors", {"info_words": len(info)})

"""cocotb bench: the FP engine under Verilator, exact against golden ``lif_forward``.

The device under test is :class:`FpEngineTop`: the :class:`~spikeforge.rtl.fp_engine.FpEngine`
plus a weight memory that the bench loads through a write port (so one Verilator build serves
every seed's weights). The bench takes everything else from the JSON that
:func:`spikeforge.sim.runner.run` wrote (``$SPIKEFORGE_COSIM_ARGS``)::

    config   SpikeforgeConfig.to_dict(); must give the CoreParams the top was built with
    params   dataclasses.asdict(CoreParams) of the build
    seed     drives the input gaps and the output backpressure
    replay   one-line command that reruns this simulation
    stimuli  [{"density": d, "weights": (N_out, N_in), "inputs": (T, B, N_in)}, ...]
    waves    path of the VCD (added by the runner)

For every stimulus it loads the weights, streams the B samples back to back (``fresh`` on each
sample's first end-of-timestep), collects every ``neuron_out`` payload and compares membranes,
spikes and surrogates with ``model.lif_forward`` on the same JSON by exact equality. Input gaps
and output backpressure are runtime knobs (cocotb parametrization, see ``STALLS``).
"""

from __future__ import annotations

import random
import time

import cocotb
import torch
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, ReadOnly, RisingEdge, SimTimeoutError, Timer, with_timeout
from cocotb.utils import get_sim_time

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden import model
from spikeforge.rtl.fp_engine import FpEngine, neuron_group_layout, spike_event_layout
from spikeforge.rtl.params import CoreParams
from spikeforge.sim.amaranth_bench import connect_fp_weights, fp_weight_words
from spikeforge.sim.tb.streams import StreamSource, stream_port

CLOCK_NS = 10

#: runtime knobs (cocotb parametrization of ``matches_golden``): (gap, stall) =
#: (probability of an idle cycle before each input event, probability that neuron_out.ready
#: is low in a cycle): no stalls, random both ways, heavy output backpressure
STALLS = [(0.0, 0.0), (0.3, 0.3), (0.05, 0.8)]


# ---------------------------------------------------------------------------------------------
# the device under test


class FpEngineTop(wiring.Component):
    """FpEngine + weight memory. Word (input i, group g) is at address ``i * max_groups + g``,
    lane k of it is W[g*lanes + k, i]; the bench writes the words through ``wload_*``."""

    def __init__(self, params: CoreParams):
        if not isinstance(params, CoreParams):
            raise TypeError(f"FpEngineTop needs CoreParams, got {type(params).__name__}")
        self.p = params
        self.fp = FpEngine(params)
        self.depth = params.max_inputs * params.max_groups
        fp_ports = self.fp.signature.members
        super().__init__(
            {
                "spikes_in": In(stream.Signature(spike_event_layout(params.input_index_bits))),
                "neuron_out": Out(stream.Signature(neuron_group_layout(params))),
                "groups": In(fp_ports["groups"].shape),
                "neurons": In(fp_ports["neurons"].shape),
                "wload_en": In(1),
                "wload_addr": In(range(max(2, self.depth))),
                "wload_data": In(params.lanes * params.weight_bits),
                "busy": Out(1),
                "stalled": Out(1),
                "event_done": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.p
        m.submodules.fp = fp = self.fp
        m.submodules.wmem = wmem = Memory(shape=p.lanes * p.weight_bits, depth=self.depth, init=[])
        wr = wmem.write_port()
        wiring.connect(m, wiring.flipped(self.spikes_in), fp.spikes_in)
        wiring.connect(m, fp.neuron_out, wiring.flipped(self.neuron_out))
        m.d.comb += [
            fp.groups.eq(self.groups),
            fp.neurons.eq(self.neurons),
            wr.en.eq(self.wload_en),
            wr.addr.eq(self.wload_addr),
            wr.data.eq(self.wload_data),
            self.busy.eq(fp.busy),
            self.stalled.eq(fp.stalled),
            self.event_done.eq(fp.event),
        ]
        connect_fp_weights(m, fp, wmem, p)
        return m


class StreamSink:
    """Drives ``<name>__ready`` low with probability ``stall`` per cycle and records every
    payload taken, decoded with its layout, with the sim time of the transfer. Also counts
    cycles and the DUT's ``busy`` cycles."""

    def __init__(self, dut, name: str, layout, rng: random.Random, stall: float):
        self.dut = dut
        self.clk = dut.clk
        self.valid, self.ready, self.payload = stream_port(dut, name)
        self.layout = layout
        self.rng = rng
        self.stall = stall
        self.items: list = []
        self.times: list[int] = []
        self.cycles = 0
        self.busy_cycles = 0
        self._target = 0
        self._reached = Event()
        self.ready.value = 0

    async def run(self) -> None:
        while True:
            self.ready.value = int(self.rng.random() >= self.stall)
            await ReadOnly()
            self.cycles += 1
            self.busy_cycles += int(self.dut.busy.value)
            if int(self.valid.value) and int(self.ready.value):
                self.items.append(self.layout.from_bits(self.payload.value.to_unsigned()))
                self.times.append(get_sim_time("ns"))
                if len(self.items) >= self._target:
                    self._reached.set()
            await RisingEdge(self.clk)

    async def wait_for(self, count: int, max_cycles: int) -> None:
        """Until ``count`` payloads in all have been taken; raise after ``max_cycles``."""
        self._target = count
        self._reached.clear()
        if len(self.items) >= count:
            return
        try:
            await with_timeout(self._reached.wait(), max_cycles * CLOCK_NS, "ns")
        except SimTimeoutError:
            raise TimeoutError(
                f"neuron_out: got {len(self.items)} of {count} payloads after {max_cycles} cycles "
                f"(sim time {get_sim_time('ns')} ns): the engine hangs"
            ) from None
        await RisingEdge(self.clk)  # the event fires in ReadOnly: back to a writable cycle start


# ---------------------------------------------------------------------------------------------
# the bench


class TB:
    """Owns the clock, the reset and the two stream drivers of one FpEngineTop."""

    def __init__(self, dut, args: dict, gap: float = 0.0, stall: float = 0.0):
        self.dut = dut
        self.args = args
        self.seed = int(args["seed"])
        self.cfg = SpikeforgeConfig.from_dict(args["config"])
        self.p = CoreParams.from_config(self.cfg)
        built = CoreParams(**args["params"])
        if self.p != built:
            raise ValueError(f"config gives {self.p}, but the simulator was built for {built}")
        # one generator per driver: the gap pattern does not depend on how the two interleave
        self.source = StreamSource(dut, "spikes_in", spike_event_layout(self.p.input_index_bits),
                                   random.Random(2 * self.seed), gap)
        self.sink = StreamSink(dut, "neuron_out", neuron_group_layout(self.p), random.Random(2 * self.seed + 1), stall)
        self.gap, self.stall = gap, stall

    async def start(self) -> None:
        Clock(self.dut.clk, CLOCK_NS, unit="ns").start()
        d = self.dut
        d.wload_en.value = 0
        d.wload_addr.value = 0
        d.wload_data.value = 0
        d.groups.value = 0
        d.neurons.value = 0
        await self.reset()
        cocotb.start_soon(self.sink.run())

    async def reset(self, cycles: int = 3) -> None:
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0

    async def load_weights(self, weights: torch.Tensor) -> None:
        d = self.dut
        for addr, word in enumerate(fp_weight_words(self.p, weights)):
            d.wload_en.value = 1
            d.wload_addr.value = addr
            d.wload_data.value = word
            await RisingEdge(d.clk)
        d.wload_en.value = 0

    async def run_stimulus(self, weights: torch.Tensor, inputs: torch.Tensor):
        """Stream ``inputs`` (T, B, N_in) through the engine; the RTL's (T, B, N_out) membrane,
        spikes, surrogate, plus the group index and sim time of every payload in stream order."""
        p = self.p
        T, B, n_in = inputs.shape
        n_out = weights.shape[0]
        if n_in > p.max_inputs or n_out > p.max_neurons:
            raise ValueError(f"layer {n_out}x{n_in} does not fit the build ({p.max_neurons}x{p.max_inputs})")
        G = -(-n_out // p.lanes)
        await self.load_weights(weights)
        self.dut.groups.value = G
        self.dut.neurons.value = n_out
        await ClockCycles(self.dut.clk, 2)  # the geometry leads the first event (FpEngine's groups port)
        events = []
        for b in range(B):
            for t in range(T):
                events += [{"index": int(i)} for i in torch.nonzero(inputs[t, b]).flatten()]
                events.append({"eot": 1, "fresh": int(t == 0)})
        first = len(self.sink.items)
        count = T * B * G
        # every event costs at most G cycles, every payload at most a few; stalls scale it
        budget = int((len(events) * (G + 2) + count * 4 + 64) / (1 - max(self.gap, self.stall)) * 4)
        cocotb.start_soon(self.source.send(events))
        await self.sink.wait_for(first + count, budget)
        items = self.sink.items[first:first + count]
        times = self.sink.times[first:first + count]
        P = p.lanes
        width = G * P
        v = torch.zeros(T, B, width, dtype=torch.int64)
        s = torch.zeros_like(v)
        g = torch.zeros_like(v)
        order = []  # (b, t, expected group, payload group, time)
        for n, item in enumerate(items):
            b, rest = divmod(n, T * G)
            t, grp = divmod(rest, G)
            lanes = slice(grp * P, (grp + 1) * P)
            v[t, b, lanes] = torch.tensor([int(x) for x in item.membrane])
            s[t, b, lanes] = torch.tensor([(int(item.spikes) >> k) & 1 for k in range(P)])
            g[t, b, lanes] = torch.tensor([int(x) for x in item.surrogate])
            order.append((b, t, grp, int(item.group), times[n]))
        return v, s, g, order

    def check(self, stim_index: int, stim: dict, weights, inputs, v, s, g, order) -> None:
        """Exact compare with golden lif_forward; raise naming the first mismatch in stream order."""
        p = self.p
        P = p.lanes
        T, B, _ = inputs.shape
        n_out = weights.shape[0]
        golden = model.lif_forward(self.cfg, weights, inputs)
        ref = {"membrane": golden.membrane, "spikes": golden.spikes, "surrogate": golden.surr}
        rtl = {"membrane": v, "spikes": s, "surrogate": g}
        if (all(torch.equal(rtl[name][:, :, :n_out], ref[name]) for name in rtl)
                and not s[:, :, n_out:].any() and all(got == want for _, _, want, got, _ in order)):
            return
        # something differs: walk the payloads in stream order to name the first mismatch
        for b, t, grp, got_grp, when in order:
            where = f"sample {b}, timestep {t}"
            if got_grp != grp:
                self._fail(stim_index, stim, f"group index at {where}: rtl payload group {got_grp} != expected {grp}", when)
            for k in range(P):
                j = grp * P + k
                if j >= n_out:
                    if int(s[t, b, j]):
                        self._fail(stim_index, stim, f"spikes at {where}, lane {k} of group {grp} "
                                   f"(past the layer's {n_out} neurons): rtl 1 != 0", when)
                    continue
                for name in ("membrane", "spikes", "surrogate"):
                    got, want = int(rtl[name][t, b, j]), int(ref[name][t, b, j])
                    if got != want:
                        self._fail(stim_index, stim, f"{name} at {where}, neuron {j} (group {grp}, lane {k}): "
                                   f"rtl {got} != golden {want}", when)

    def _fail(self, stim_index: int, stim: dict, what: str, when: int) -> None:
        a = self.args
        raise AssertionError(
            f"FP engine != golden lif_forward (seed {self.seed}, stimulus {stim_index} density {stim['density']}, "
            f"input gap {self.gap}, output stall {self.stall})\n"
            f"  first mismatch: {what}\n"
            f"  at sim time {when} ns\n"
            f"  waves: {a.get('waves') or 'off (run with waves=True)'}\n"
            f"  replay: {a.get('replay', '?')}"
        )


def _args() -> dict:
    from spikeforge.sim.runner import cosim_args

    return cosim_args()


@cocotb.test()
@cocotb.parametrize((("gap", "stall"), STALLS))
async def matches_golden(dut, gap: float, stall: float) -> None:
    """Every stimulus of the JSON, back to back, exact against golden lif_forward."""
    args = _args()
    tb = TB(dut, args, gap, stall)
    await tb.start()
    for n, stim in enumerate(args["stimuli"]):
        weights = torch.tensor(stim["weights"], dtype=torch.int64)
        inputs = torch.tensor(stim["inputs"], dtype=torch.int64)
        try:
            out = await tb.run_stimulus(weights, inputs)
        except TimeoutError as e:
            tb._fail(n, stim, str(e), get_sim_time("ns"))
        tb.check(n, stim, weights, inputs, *out)
    dut._log.info(
        "gap %.2f stall %.2f: %d cycles, engine busy %d (%.0f%%)",
        gap, stall, tb.sink.cycles, tb.sink.busy_cycles, 100.0 * tb.sink.busy_cycles / max(1, tb.sink.cycles),
    )


@cocotb.test()
async def free_running(dut) -> None:
    """Throughput of the bare simulator: the engine integrates one held-valid event forever,
    ready held high, no Python per cycle (the clock is cocotb's GPI clock)."""
    args = _args()
    cycles = int(args.get("free_running_cycles", 100_000))
    p = CoreParams(**args["params"])
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    dut.wload_en.value = 0
    dut.groups.value = p.max_groups
    dut.neurons.value = p.max_neurons
    dut.neuron_out__ready.value = 1
    dut.spikes_in__payload.value = 0  # index 0, not an end of timestep
    await Timer(3 * CLOCK_NS, "ns")
    dut.rst.value = 0
    dut.spikes_in__valid.value = 1
    t0 = time.perf_counter()
    await Timer(cycles * CLOCK_NS, "ns")
    wall = time.perf_counter() - t0
    dut._log.info("free running: %d cycles in %.3f s = %.0f cycles/s", cycles, wall, cycles / wall)

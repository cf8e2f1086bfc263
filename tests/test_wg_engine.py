"""WG engine vs the golden model, in Amaranth's simulator: the accumulated gradient of a batch
(Σ_b Σ_t δᵀx, golden ``layer_backward(...).grad``) and the updated weights (golden
``apply_update``, every rounding mode, the LFSR stream position afterwards), exactly, with random
gaps between input events. The accumulate work is counted too: one gradient write per (input
spike, non-zero delta group) and one delta scan per timestep with spikes, nothing more.

A failure names the seed, the first mismatching tensor and index, and the replay command.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import warnings

import pytest
import torch
from amaranth import Elaboratable, Module, Signal
from amaranth.hdl import UnusedElaboratable
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from spikeforge.config import SpikeforgeConfig, bits_for_range
from spikeforge.golden import lfsr as golden_lfsr
from spikeforge.golden import model
from spikeforge.golden.backend import update_seed
from spikeforge.golden.fixedpoint import exact_matmul
from spikeforge.rtl.params import CoreParams
from spikeforge.rtl.skewed_memory import READ_LATENCY, SkewedMemory
from spikeforge.rtl.wg_engine import WgEngine
from spikeforge.sim.amaranth_bench import simulate, watch_collisions
from spikeforge.sim.amaranth_bench import send


class WgHarness(Elaboratable):
    """The engine, one weight SkewedMemory per layer (``sel`` picks the one wired to the engine)
    and the BP side's per-timestep delta storage: the deltas of every timestep the test will
    feed, in feeding order, a new timestep after every ``eot`` handshake."""

    def __init__(self, engine: WgEngine, weights: list[torch.Tensor], step_deltas: list[torch.Tensor]):
        self.wg = engine
        p = engine.p
        self.p = p
        self.wmems = [
            SkewedMemory(lanes=p.lanes, width=p.weight_bits, max_outputs=p.max_neurons, max_inputs=p.max_inputs,
                         init={(j, i): int(w[j, i]) for j in range(w.shape[0]) for i in range(w.shape[1])})
            for w in weights
        ]
        self.sel = Signal(range(max(2, len(weights))))
        self.tb_rd_en = Signal()
        self.tb_rd_major = Signal(len(engine.w_rd_major))
        self.tb_rd_group = Signal(len(engine.w_rd_group))
        self.tb_rd_data = Signal.like(engine.w_rd_banks)
        G = p.max_groups
        mask = (1 << p.error_bits) - 1
        words = []
        for d in step_deltas:
            for g in range(G):
                word = 0
                for k in range(p.lanes):
                    j = g * p.lanes + k
                    if j < d.shape[0]:
                        word |= (int(d[j]) & mask) << (k * p.error_bits)
                words.append(word)
        self.delta_words = words or [0]

    def elaborate(self, platform):
        m = Module()
        wg, p = self.wg, self.p
        m.submodules.wg = wg
        step = Signal(range(len(self.delta_words) // self.p.max_groups + 2))
        ev = wg.spikes_in
        with m.If(ev.valid & ev.ready & ev.payload.eot):
            m.d.sync += step.eq(step + 1)
        m.submodules.deltas = dmem = Memory(shape=p.lanes * p.error_bits, depth=len(self.delta_words),
                                            init=self.delta_words)
        rd = dmem.read_port()
        m.d.comb += [rd.en.eq(wg.delta_en), rd.addr.eq(step * p.max_groups + wg.delta_group),
                     wg.delta_data.as_value().eq(rd.data)]
        for n, wm in enumerate(self.wmems):
            m.submodules[f"weights{n}"] = wm
            on = self.sel == n
            with m.If(self.tb_rd_en):
                m.d.comb += [wm.rd_en.eq(on), wm.rd_row.eq(1), wm.rd_major.eq(self.tb_rd_major),
                             wm.rd_group.eq(self.tb_rd_group)]
            with m.Else():
                m.d.comb += [wm.rd_en.eq(on & wg.w_rd_en), wm.rd_row.eq(wg.w_rd_row), wm.rd_major.eq(wg.w_rd_major),
                             wm.rd_group.eq(wg.w_rd_group)]
            m.d.comb += [wm.wr_en.eq(on & wg.w_wr_en), wm.wr_row.eq(wg.w_wr_row), wm.wr_major.eq(wg.w_wr_major),
                         wm.wr_group.eq(wg.w_wr_group), wm.wr_data.eq(wg.w_wr_data), wm.wr_mask.eq(wg.w_wr_mask)]
            with m.If(on):
                m.d.comb += [wg.w_rd_banks.eq(wm.rd_banks), self.tb_rd_data.eq(wm.rd_data)]
        return m


# ---------------------------------------------------------------------------------------------
# driving a sequence of phases and collecting what the engine produced


def spike_events(x: torch.Tensor, rng: random.Random, repeat: float = 0.0):
    """(index, eot, fresh) for x (T, B, N): sample by sample, timestep by timestep, the spikes of
    a timestep in random order (WG is order-free); ``repeat`` > 0 sends some indices again right
    away (not a legal spike train, but it hammers the read-after-write path)."""
    T, B, _ = x.shape
    out = []
    for b in range(B):
        for t in range(T):
            idx = [int(i) for i in torch.nonzero(x[t, b]).flatten()]
            rng.shuffle(idx)
            for i in idx:
                out.append((i, 0, 0))
                while rng.random() < repeat:
                    out.append((i, 0, 0))
            out.append((0, 1, int(t == 0)))
    return out


def golden_grad(delta: torch.Tensor, events, T: int, B: int, n_in: int) -> torch.Tensor:
    """Σ over fed events of δ[t, b] at the input index: Σ_b Σ_t δᵀx for a legal spike train."""
    x = torch.zeros(T * B, n_in, dtype=torch.int64)
    step = 0
    for i, eot, _ in events:
        if eot:
            step += 1
        else:
            x[step, i] += 1
    d = delta.transpose(0, 1).reshape(T * B, -1)  # (b, t) feeding order
    return exact_matmul(d.T, x, (1 << 62) - 1)


def run_phases(engine: WgEngine, weights, phases, seed: int, gap: float = 0.3):
    """Simulate ``phases``: ("acc", layer, events, rows, cols, step_deltas) | ("upd", layer, lr_shift, rows, cols).

    Returns, per phase, the gradient read back after it (and for updates the weights and the
    LFSR state), then the whole gradient memory (every row and column, not only the layers'),
    plus the work counters."""
    p = engine.p
    step_deltas = [d for ph in phases if ph[0] == "acc" for d in ph[5]]
    dut = WgHarness(engine, weights, step_deltas)
    wg = engine
    rng = random.Random(seed)
    results = []
    work = {"acc_writes": 0, "delta_reads": 0}

    async def read_matrix(ctx, rows, cols, which, layer):
        H = -(-cols // p.lanes)
        out = torch.zeros(rows, cols, dtype=torch.int64)
        for j in range(rows):
            for h in range(H):
                if which == "grad":
                    if wg.grad_layers:
                        ctx.set(wg.grad_rd_layer, layer)
                    ctx.set(wg.grad_rd_en, 1)
                    ctx.set(wg.grad_rd_row, 1)
                    ctx.set(wg.grad_rd_major, j)
                    ctx.set(wg.grad_rd_group, h)
                else:
                    ctx.set(dut.sel, layer)
                    ctx.set(dut.tb_rd_en, 1)
                    ctx.set(dut.tb_rd_major, j)
                    ctx.set(dut.tb_rd_group, h)
                await ctx.tick()
                ctx.set(wg.grad_rd_en, 0)
                ctx.set(dut.tb_rd_en, 0)
                for _ in range(READ_LATENCY - 1):
                    await ctx.tick()
                data = wg.grad_rd_data if which == "grad" else dut.tb_rd_data
                for k in range(p.lanes):
                    i = h * p.lanes + k
                    if i < cols:
                        out[j, i] = ctx.get(data[k])
        ctx.set(wg.grad_rd_en, 0)
        ctx.set(dut.tb_rd_en, 0)
        return out

    async def wait_idle(ctx):
        await ctx.tick()
        while ctx.get(wg.busy):
            await ctx.tick()

    async def bench(ctx):
        for ph in phases:
            kind, layer = ph[0], ph[1]
            rows, cols = ph[3], ph[4]
            ctx.set(dut.sel, layer)
            if wg.grad_layers:
                ctx.set(wg.layer, layer)
            ctx.set(wg.rows, rows)
            ctx.set(wg.cols, cols)
            if kind == "acc":
                for idx, eot, fresh in ph[2]:
                    await send(ctx, wg.spikes_in, {"index": idx, "eot": eot, "fresh": fresh}, rng, gap)
                await wait_idle(ctx)
                results.append({"grad": await read_matrix(ctx, rows, cols, "grad", layer)})
            else:
                ctx.set(wg.lr_shift, ph[2])
                assert ctx.get(wg.shift_ok), f"lr_shift {ph[2]} not supported by this engine"
                ctx.set(wg.update, 1)
                await ctx.tick()
                ctx.set(wg.update, 0)
                await wait_idle(ctx)
                results.append({
                    "weights": await read_matrix(ctx, rows, cols, "weights", layer),
                    "grad": await read_matrix(ctx, rows, cols, "grad", layer),
                    "lfsr": ctx.get(wg.lfsr_state) if wg.has_lfsr else None,
                })
        if wg.grad_layers:  # every layer's matrix, each as its own shape
            results.append({"all_grad": [await read_matrix(ctx, r, c, "grad", l) for l, (r, c) in enumerate(wg.grad_layers)]})
        else:
            results.append({"all_grad": await read_matrix(ctx, p.max_neurons, p.max_inputs, "grad", 0)})
        if wg.single_port:  # a read lost to a landing write would be a cadence bug
            assert ctx.get(wg.grad.rw_conflict) == 0, f"seed {seed}: single-port gradient memory read and write collided"

    async def monitor(ctx):
        while True:
            _, _, wr_en, wr_row, d_en = await ctx.tick().sample(wg.grad.wr_en, wg.grad.wr_row, wg.delta_en)
            work["acc_writes"] += wr_en & ~wr_row & 1
            work["delta_reads"] += d_en

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    watch_collisions(sim, dut)
    sim.add_testbench(bench)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return results, work


def fail_first(name: str, rtl: torch.Tensor, ref: torch.Tensor, seed, replay: str):
    bad = torch.nonzero(rtl != ref)
    if len(bad):
        idx = tuple(bad[0].tolist())
        pytest.fail(f"seed {seed}: first mismatch in {name} at index {idx}: rtl {int(rtl[idx])} != golden "
                    f"{int(ref[idx])}\n  replay: {replay}")


# ---------------------------------------------------------------------------------------------
# random workloads


def make_cfg(lanes: int, layers, rounding: str, T: int, B: int, error_bits: int = 8, weight_bits: int = 6,
             lr_shift: int = 3, decay=(), grad_bits: int | None = None):
    # the narrowest accumulator the config accepts, unless a test sends more than T*B adds per weight
    grad_bits = grad_bits or bits_for_range(-(1 << (error_bits - 1)) * T * B, ((1 << (error_bits - 1)) - 1) * T * B)
    return SpikeforgeConfig().replace(
        network={"layers": list(layers), "timesteps": T},
        formats={"error_bits": error_bits, "grad_bits": grad_bits, "weight_bits": weight_bits},
        training={"batch_size": B, "update_rounding": rounding, "lr_shift": lr_shift, "lr_decay_epochs": list(decay),
                  "target_true": T, "target_false": 0, "output_error_shift": 2, "seed": 7},
        hardware={"lanes": lanes},
    )


def rail_weights(cfg: SpikeforgeConfig, shape, g: torch.Generator) -> torch.Tensor:
    """Uniform weights, half of them replaced by one of the four values next to the rails."""
    wb = cfg.formats.weight_bits
    lo, hi = -(1 << (wb - 1)), (1 << (wb - 1)) - 1
    w = torch.randint(lo, hi + 1, shape, generator=g)
    rails = torch.tensor([lo, lo + 1, hi - 1, hi])[torch.randint(0, 4, shape, generator=g)]
    return torch.where(torch.rand(shape, generator=g) < 0.5, rails, w)


def sparse_deltas(cfg: SpikeforgeConfig, T: int, B: int, n_out: int, g: torch.Generator, amp_bits: int | None = None,
                  rail_p: float = 0.2) -> torch.Tensor:
    """δ (T, B, n_out): whole lane groups zero half of the time (what the engine skips), the rest
    uniform in ``amp_bits`` bits, with a share ``rail_p`` of the error rails and 20 % zeros."""
    eb = cfg.formats.error_bits
    amp = amp_bits or eb
    lo, hi = -(1 << (eb - 1)), (1 << (eb - 1)) - 1
    d = torch.randint(-(1 << (amp - 1)), 1 << (amp - 1), (T, B, n_out), generator=g)
    rails = torch.tensor([lo, hi])[torch.randint(0, 2, (T, B, n_out), generator=g)]
    d = torch.where(torch.rand(T, B, n_out, generator=g) < rail_p, rails, d)
    d = torch.where(torch.rand(T, B, n_out, generator=g) < 0.2, 0, d)
    P = cfg.hardware.lanes
    G = -(-n_out // P)
    keep = (torch.rand(T, B, G, generator=g) < 0.5).repeat_interleave(P, dim=2)[:, :, :n_out]
    return d * keep


def expected_work(cfg, delta: torch.Tensor, events, T: int, B: int):
    """(gradient writes, delta reads) the contract's work bound allows, exactly."""
    P = cfg.hardware.lanes
    n_out = delta.shape[2]
    G = -(-n_out // P)
    nnz = [0] * (T * B)
    step = 0
    for _, eot, _ in events:
        if eot:
            step += 1
        else:
            nnz[step] += 1
    writes = reads = 0
    for s in range(T * B):
        b, t = divmod(s, T)
        pad = torch.zeros(G * P, dtype=torch.int64)
        pad[:n_out] = delta[t, b]
        nz_groups = int((pad.view(G, P) != 0).any(1).sum())
        writes += nnz[s] * nz_groups
        reads += G if nnz[s] else 0
    return writes, reads


LANE_CASES = [1, 2, 4, 8]
LAYERS = (11, 13, 5)  # fan-ins 11 and 13: neither a multiple of 2, 4 or 8
# Two updates per run. Layer 0: a coarse shift on small deltas with a few rail values (rounding
# ties, both weight rails); layer 1: a fine shift on full 16-bit deltas, where only the rounding
# bits decide (shift > 16: stochastic takes 16-bit draws and compares the bits below the top 16).
SHIFTS = {
    "floor": (2, 19),
    "half_up": (1, 9),
    "half_even": (2, 11),
    "stochastic": (3, 17),
}
DELTAS = ((7, 0.03), (16, 0.1))  # (amplitude bits, share of rail values) per layer


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("rounding", list(SHIFTS))
@pytest.mark.parametrize("lanes", LANE_CASES)
def test_accumulate_and_update_exact(lanes, rounding, seed, distinct=False, gap=None, single_port=False, layered=False):
    replay = f"pytest 'tests/test_wg_engine.py::test_accumulate_and_update_exact[{lanes}-{rounding}-{seed}]'"
    if distinct:
        replay = f"pytest 'tests/test_wg_engine.py::test_distinct_indices_mode_exact[{lanes}-{rounding}]'"
    if single_port:
        replay = f"pytest 'tests/test_wg_engine.py::test_single_port_mode_exact[{lanes}-{rounding}-{distinct}-{gap}]'"
    if layered:
        replay = f"pytest 'tests/test_wg_engine.py::test_layered_gradients_exact[{lanes}-{rounding}-{single_port}]'"
    seed = 1000 * lanes + 10 * list(SHIFTS).index(rounding) + seed
    T, B = 3, 2
    s0, s1 = SHIFTS[rounding]
    cfg = make_cfg(lanes, LAYERS, rounding, T, B, error_bits=16, lr_shift=s0)
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    shapes = cfg.layer_shapes
    weights = [rail_weights(cfg, s, g) for s in shapes]
    # a single-port engine is the small-FPGA layout's (CoreParams.compact: block RAM delay lines)
    params = dataclasses.replace(CoreParams.from_config(cfg), compact=single_port)
    engine = WgEngine(params, lr_shifts=(s0, s1), fan_ins=[n_in for _, n_in in shapes],
                      lfsr_init_seed=seed, distinct_indices=distinct, single_port=single_port,
                      grad_layers=list(shapes) if layered else None)
    phases, gold = [], []
    stream = golden_lfsr.LfsrStream(seed)
    w_now = [w.clone() for w in weights]
    for layer, shift in ((0, s0), (1, s1)):
        n_out, n_in = shapes[layer]
        x = (torch.rand(T, B, n_in, generator=g) < [0.3, 0.6][layer]).to(torch.int64)
        delta = sparse_deltas(cfg, T, B, n_out, g, *DELTAS[layer])
        events = spike_events(x, rng)
        # lanes past the layer's last neuron hold garbage: the engine must neither count nor add them
        pad = engine.p.max_groups * lanes - n_out
        step_deltas = [torch.cat([delta[t, b], torch.randint(1, 99, (pad,), generator=g)])
                       for b in range(B) for t in range(T)]
        phases.append(("acc", layer, events, n_out, n_in, step_deltas))
        phases.append(("upd", layer, shift, n_out, n_in))
        grad = golden_grad(delta, events, T, B, n_in)
        # the same thing the golden BP computes: Σ_b Σ_t δ[t,b]ᵀ x[t,b]
        assert torch.equal(grad, exact_matmul(delta.reshape(T * B, n_out).T, x.reshape(T * B, n_in), 1 << 40))
        w_new = model.apply_update(cfg, [w_now[layer]], [grad], stream, lr_shift=shift)[0]
        gold.append((grad, w_new, stream.state, expected_work(cfg, delta, events, T, B)))
        w_now[layer] = w_new

    if layered:  # the core's order: both layers accumulate (the last one first), then both update
        phases = [phases[2], phases[0], phases[1], phases[3]]
        # (run_phases serves the step deltas in phase order)
    results, work = run_phases(engine, weights, phases, seed, **({} if gap is None else {"gap": gap}))
    if layered:
        results = [results[1], results[2], results[0], results[3], results[4]]
    writes = reads = 0
    for layer in (0, 1):
        grad, w_new, state, (wr, rd) = gold[layer]
        acc, upd = results[2 * layer], results[2 * layer + 1]
        fail_first(f"layer {layer} gradient after accumulate", acc["grad"], grad, seed, replay)
        fail_first(f"layer {layer} weights after update (lr_shift {SHIFTS[rounding][layer]})", upd["weights"], w_new,
                   seed, replay)
        fail_first(f"layer {layer} gradient after update (must be cleared)", upd["grad"], torch.zeros_like(grad), seed,
                   replay)
        if rounding == "stochastic":
            assert upd["lfsr"] == state, (f"seed {seed}: LFSR state after layer {layer} update: rtl {upd['lfsr']:#x} "
                                          f"!= golden {state:#x}\n  replay: {replay}")
        writes += wr
        reads += rd
    if layered:
        for l, g_all in enumerate(results[-1]["all_grad"]):
            fail_first(f"layer {l} gradients after both updates (must be all zero)", g_all, torch.zeros_like(g_all), seed,
                       replay)
    else:
        fail_first("gradient memory after both updates (must be all zero)", results[-1]["all_grad"],
                   torch.zeros(engine.p.max_neurons, engine.p.max_inputs, dtype=torch.int64), seed, replay)
    assert (work["acc_writes"], work["delta_reads"]) == (writes, reads), (
        f"seed {seed}: accumulate work (gradient writes, delta reads) rtl {work['acc_writes'], work['delta_reads']} "
        f"!= bound {writes, reads}\n  replay: {replay}")


@pytest.mark.parametrize("rounding", ["floor", "stochastic"])
@pytest.mark.parametrize("lanes", LANE_CASES)
def test_distinct_indices_mode_exact(lanes, rounding):
    """``distinct_indices`` (the core's engines: the spike scanner never repeats an index within a
    timestep) leaves the hazard check out; legal spike trains, back to back, stay exact."""
    test_accumulate_and_update_exact(lanes, rounding, 0, distinct=True, gap=0.0)


@pytest.mark.parametrize("distinct, gap", [(False, 0.3), (True, 0.0), (False, 0.0)])
@pytest.mark.parametrize("rounding", ["floor", "stochastic"])
@pytest.mark.parametrize("lanes", [1, 4])
def test_single_port_mode_exact(lanes, rounding, distinct, gap):
    """``single_port`` (iCE40 SPRAM): the gradient memory is touched every other cycle, reads and
    writes in opposite phases, and cleared after reset (it starts with a poison pattern in
    simulation); accumulate and update stay exact, nothing collides, the work is the same."""
    test_accumulate_and_update_exact(lanes, rounding, 0, distinct=distinct, gap=gap, single_port=True)


@pytest.mark.parametrize("single_port", [False, True])
@pytest.mark.parametrize("rounding", ["floor", "stochastic"])
@pytest.mark.parametrize("lanes", [1, 4])
def test_layered_gradients_exact(lanes, rounding, single_port):
    """``grad_layers`` (the core's one engine for every layer): both layers accumulate into one
    memory, each in its own matrix, then update one after the other; exact, and the layers never
    touch each other's gradients."""
    test_accumulate_and_update_exact(lanes, rounding, 0, distinct=True, gap=0.0, single_port=single_port, layered=True)


@pytest.mark.parametrize("single_port", [False, True])
@pytest.mark.parametrize("lanes, shape", [(4, (3, 5)), (1, (1, 4)), (8, (8, 3))])
def test_repeated_word_read_after_write(lanes, shape, single_port):
    """One delta group, the same input index several times in a row: every RMW hits the word the
    previous cycle wrote (single-port: every other cycle)."""
    seed = 77 + lanes
    replay = f"pytest 'tests/test_wg_engine.py::test_repeated_word_read_after_write[{lanes}-{shape}-{single_port}]'"
    n_out, n_in = shape
    T, B = 4, 2
    cfg = make_cfg(lanes, (n_in, n_out), "floor", T, B, grad_bits=24)  # repeats add more than T*B times
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    x = (torch.rand(T, B, n_in, generator=g) < 0.7).to(torch.int64)
    eb = cfg.formats.error_bits
    delta = torch.randint(-(1 << (eb - 1)), 1 << (eb - 1), (T, B, n_out), generator=g)
    events = spike_events(x, rng, repeat=0.6)
    grad = golden_grad(delta, events, T, B, n_in)
    engine = WgEngine(CoreParams.from_config(cfg), single_port=single_port)
    phases = [("acc", 0, events, n_out, n_in, [delta[t, b] for b in range(B) for t in range(T)])]
    # no gaps: back-to-back events are the hazard
    results, _ = run_phases(engine, [torch.zeros(n_out, n_in, dtype=torch.int64)], phases, seed, gap=0.0)
    fail_first("gradient", results[0]["grad"], grad, seed, replay)


def test_golden_training_step_two_layers_stochastic():
    """Deltas and input spikes of a real golden forward + BPTT step; layer gradients equal
    ``layer_backward(...).grad`` and the weights after both updates equal ``apply_update`` with
    the config's update LFSR (layer 0 first, one engine, one stream)."""
    seed = 5
    replay = "pytest tests/test_wg_engine.py -k golden_training_step"
    T, B = 4, 3
    cfg = SpikeforgeConfig().replace(
        network={"layers": [10, 12, 6], "timesteps": T},
        neuron={"threshold": 40, "beta": 0.875, "beta_bits": 3},
        formats={"error_bits": 10, "grad_bits": bits_for_range(-512 * T * B, 511 * T * B), "weight_bits": 6},
        surrogate={"kind": "triangle", "width": 64, "bits": 3},
        training={"batch_size": B, "loss": "count_mse", "target_true": 3, "target_false": 0, "output_error_shift": 5,
                  "error_shift": 4, "lr_shift": 5, "lr_decay_epochs": [2], "update_rounding": "stochastic",
                  "seed": 11},
        hardware={"lanes": 4},
    )
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    weights = [rail_weights(cfg, s, g) // 2 for s in cfg.layer_shapes]
    inputs = (torch.rand(T, B, 10, generator=g) < 0.5).to(torch.int64)
    labels = torch.randint(0, 6, (B,), generator=g)
    trace = model.backward(cfg, weights, model.forward(cfg, weights, inputs), labels)
    shift = cfg.training.lr_shift_at(5)  # the decayed rate: 6-bit draws
    grads = [b.grad for b in trace.backward]
    assert any(int(gr.abs().sum()) for gr in grads), "degenerate step: no gradient at all"
    stream = golden_lfsr.LfsrStream(update_seed(cfg))
    want = model.apply_update(cfg, weights, grads, stream, lr_shift=shift)

    phases = []
    for l, (n_out, n_in) in enumerate(cfg.layer_shapes):
        x = inputs if l == 0 else trace.forward[l - 1].spikes
        delta = trace.backward[l].delta
        phases.append(("acc", l, spike_events(x, rng), n_out, n_in, [delta[t, b] for b in range(B) for t in range(T)]))
        phases.append(("upd", l, shift, n_out, n_in))
    results, _ = run_phases(WgEngine.from_config(cfg), weights, phases, seed)
    for l in range(2):
        fail_first(f"layer {l} gradient", results[2 * l]["grad"], grads[l], seed, replay)
        fail_first(f"layer {l} weights", results[2 * l + 1]["weights"], want[l], seed, replay)
    assert results[3]["lfsr"] == stream.state, f"seed {seed}: final LFSR state\n  replay: {replay}"


def test_stochastic_shift_zero_takes_no_draws():
    """lr_shift 0 subtracts the gradient as is and leaves the LFSR where it was (the golden model
    draws nothing then); the next update continues the stream from there."""
    seed = 31
    replay = "pytest tests/test_wg_engine.py -k shift_zero"
    T, B = 2, 2
    cfg = make_cfg(4, (6, 5), "stochastic", T, B, error_bits=5, weight_bits=8, lr_shift=0)
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    n_out, n_in = cfg.layer_shapes[0]
    w0 = rail_weights(cfg, (n_out, n_in), g)
    w = w0
    stream = golden_lfsr.LfsrStream(seed)
    phases, want = [], []
    for shift in (0, 4):
        x = (torch.rand(T, B, n_in, generator=g) < 0.5).to(torch.int64)
        delta = sparse_deltas(cfg, T, B, n_out, g)
        events = spike_events(x, rng)
        phases.append(("acc", 0, events, n_out, n_in, [delta[t, b] for b in range(B) for t in range(T)]))
        phases.append(("upd", 0, shift, n_out, n_in))
        w = model.apply_update(cfg, [w], [golden_grad(delta, events, T, B, n_in)], stream, lr_shift=shift)[0]
        want.append((w, stream.state))
    results, _ = run_phases(WgEngine(CoreParams.from_config(cfg), lr_shifts=(0, 4), lfsr_init_seed=seed),
                            [w0], phases, seed)
    for n, (w_want, state) in enumerate(want):
        fail_first(f"weights after update {n}", results[2 * n + 1]["weights"], w_want, seed, replay)
        assert results[2 * n + 1]["lfsr"] == state, f"seed {seed}: LFSR state after update {n}\n  replay: {replay}"
    assert want[0][1] == golden_lfsr.seed_state(seed)


def test_unsupported_lr_shift_is_refused():
    """The engine supports exactly the lr_shift values it was built for (each is a constant shift;
    stochastic draws must be exactly min(lr_shift, 16) bits): any other shift lowers ``shift_ok``
    and the update pulse is ignored (nothing changes, no draw taken)."""
    cfg = make_cfg(2, (3, 2), "stochastic", 2, 1, lr_shift=4)
    engine = WgEngine(CoreParams.from_config(cfg), lr_shifts=(4, 16), lfsr_init_seed=9)
    wm = SkewedMemory(lanes=2, width=6, max_outputs=2, max_inputs=3)

    async def bench(ctx):
        for s, ok in ((0, 0), (3, 0), (4, 1), (5, 0), (15, 0), (16, 1), (17, 0), (30, 0)):
            ctx.set(engine.lr_shift, s)
            assert ctx.get(engine.shift_ok) == ok, (s, ok)
        ctx.set(engine.rows, 2)
        ctx.set(engine.cols, 3)
        ctx.set(engine.lr_shift, 5)
        ctx.set(engine.update, 1)
        await ctx.tick()
        ctx.set(engine.update, 0)
        for _ in range(10):
            await ctx.tick()
            assert not ctx.get(engine.busy)
            assert ctx.get(engine.lfsr_state) == 9

    m = Module()
    m.submodules.wg = engine
    m.submodules.wm = wm
    simulate(m, bench)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(params="not params"), TypeError, "CoreParams"),
        (dict(lr_shifts=()), ValueError, "lr_shifts"),
        (dict(lr_shifts=(49,)), ValueError, "lr_shifts"),
        (dict(lr_shifts=(4,), fan_ins=(0,)), ValueError, "fan_ins"),
        (dict(lr_shifts=(4,), fan_ins=(14,)), ValueError, "fan_ins"),
        (dict(lr_shifts=(4,), lfsr_init_seed=-3), ValueError, "lfsr_init_seed"),
    ],
)
def test_bad_parameters_are_refused(kwargs, exc, match):
    cfg = make_cfg(4, (13, 6), "stochastic", 2, 1)
    kwargs = dict(kwargs)
    params = kwargs.pop("params", CoreParams.from_config(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)  # never elaborated, by design
        with pytest.raises(exc, match=match):
            WgEngine(params, **kwargs)
        gc.collect()

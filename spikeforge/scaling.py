"""``spikeforge bench scaling``: training throughput of 1..20 cores, and off-chip traffic.

**What is measured and what is modelled.** The golden multi-core model (bit-exact, the same
weights on every core count) trains real batches and records, per core, slice, sample and
timestep, the work its engines have to do: input spike events, non-zero deltas, non-zero delta
groups, spikes and error partial sums sent. A cycle model turns that activity into cycles with
the per-engine costs of the RTL (docs/architecture.md; ``spikeforge bench rtl`` checks them
against the hardware counters of the one-core RTL):

    encoder  T * ceil(N_in / P)                                     (first-layer slices)
    FP       sum_t (nnz(x[t]) + 1) * G
    BP       sum_t G + (nnz(delta[t]) + 1) * H                      (H term: layers above the first)
    WG       sum_t nnz(x[t]) * groups(delta[t]) + G
    update   rows * H per batch
    network  one flit per cycle into each core; 2 cycles per router hop

with G = ceil(slice neurons / P), H = ceil(N_in / P). An event-driven schedule then runs every
batch on N cores: a slice's forward pass starts when every slice of the layer below has
delivered its spikes, its backward pass when every slice above has delivered its partial sums; a
core runs one task at a time (backward before forward), and holds the per-timestep state of at
most ``buffers`` samples, so samples pipeline through the cores within a batch. The update of a
batch starts when its last backward pass ends. These figures are the model's, labelled as such
in the report; :func:`bench_scaling_rtl` measures the multi-core RTL, whose cores hold
``hardware.sample_buffers`` samples and run the host's static one-forward-one-backward order
(sim/multicore_driver.py ``pipeline_order``) on the placement of ``place_pipeline`` (cuts at
lane groups, a core holding at most the end of one layer and the start of the next), where the
model schedules dynamically on any cut.

Off-chip traffic per training sample: this dataflow keeps weights, gradients and every
per-timestep state on chip, so the host moves the sample in and the prediction out. The dense
BPTT baseline keeps per-timestep state off chip: the forward pass writes each layer's membranes
and spikes for every timestep, the backward pass reads them back and writes and reads the
errors, and the weights are read twice and the gradients written once per batch.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.mapper import place

__all__ = ["core_tasks", "schedule_batch", "traffic_model", "bench_scaling", "scaling_summary", "CORE_COUNTS"]

CORE_COUNTS = (1, 2, 4, 8, 16, 20)
HOP_CYCLES = 2  # a router's FIFO + its output register


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Task:
    core: int
    sample: int
    layer: int
    backward: bool
    cycles: int
    sends: int  # flits this task sends to other cores when it ends


def core_tasks(cfg: SpikeforgeConfig, activity, batch: int) -> list[Task]:
    """Cycle cost of every (slice, sample, direction) of one batch from the recorded activity."""
    P = cfg.hardware.lanes
    T = cfg.network.timesteps
    tasks = []
    for a in activity:
        s = a.slice
        G, H = _ceil(s.neurons, P), _ceil(s.fan_in, P)
        for b in range(batch):
            ev = a.input_events[:, b]
            enc = T * H if s.layer == 0 else 0
            fp = int(((ev + 1) * G).sum()) + enc
            bp = T * G + (int(((a.delta_nonzero[:, b] + 1) * H).sum()) if s.layer > 0 else 0)
            wg = int((ev * a.delta_groups[:, b]).sum()) + T * G
            tasks.append(Task(a.core, b, s.layer, False, fp, int(a.spikes_out[b])))
            tasks.append(Task(a.core, b, s.layer, True, bp + wg, int(a.partials_out[b])))
    return tasks


def schedule_batch(tasks: list[Task], n_cores: int, n_layers: int, batch: int, update_cycles: list[int],
                   buffers: int) -> int:
    """Cycles from the batch's first sample to the end of its update, by list scheduling."""
    by_key: dict[tuple[int, int, bool], list[Task]] = {}
    for t in tasks:
        by_key.setdefault((t.sample, t.layer, t.backward), []).append(t)
    layer_cores = {l: {t.core for t in by_key.get((0, l, False), [])} for l in range(n_layers)}
    # when the inputs of (sample, layer, direction) are all delivered
    ready_at: dict[tuple[int, int, bool], int] = {(b, 0, False): 0 for b in range(batch)}
    done: dict[tuple[int, int, bool], int] = {}
    pending = {k: len(v) for k, v in by_key.items()}
    finish_max: dict[tuple[int, int, bool], int] = {}
    flits_in: dict[tuple[int, int, bool], int] = {}
    core_free = [0] * n_cores
    in_flight = [0] * n_cores  # samples whose state a core holds (forward started, backward not ended)
    started_fwd: set[tuple[int, int]] = set()
    queue = [t for t in tasks]
    end = 0
    while queue:
        best = None
        for t in queue:
            key = (t.sample, t.layer, t.backward)
            if key not in ready_at:
                continue
            if not t.backward and (t.core, t.sample) not in started_fwd and in_flight[t.core] >= buffers:
                continue
            start = max(core_free[t.core], ready_at[key])
            rank = (start, 0 if t.backward else 1, t.sample)
            if best is None or rank < best[0]:
                best = (rank, t, start)
        if best is None:
            raise RuntimeError("scaling model: no task can start (a dependency is missing)")
        _, t, start = best
        queue.remove(t)
        if not t.backward and (t.core, t.sample) not in started_fwd:
            started_fwd.add((t.core, t.sample))
            in_flight[t.core] += 1
        stop = start + t.cycles
        core_free[t.core] = stop
        key = (t.sample, t.layer, t.backward)
        finish_max[key] = max(finish_max.get(key, 0), stop)
        flits_in[key] = flits_in.get(key, 0) + t.sends
        pending[key] -= 1
        if t.backward and t.layer == min(l for l in range(n_layers) if t.core in layer_cores[l]):
            # the core's last backward slice of this sample: its state is free
            in_flight[t.core] -= 1
        end = max(end, stop)
        if pending[key] == 0:
            done[key] = finish_max[key]
            to = layer_cores.get(t.layer + (-1 if t.backward else 1), set()) or layer_cores[t.layer]
            receivers = len(to)
            hops = HOP_CYCLES * max(abs(a - b) for a in to for b in layer_cores[t.layer])
            arrive = done[key] + _ceil(flits_in[key], receivers) + hops
            if not t.backward:
                nxt = (t.sample, t.layer + 1, False) if t.layer + 1 < n_layers else (t.sample, n_layers - 1, True)
                ready_at[nxt] = arrive if t.layer + 1 < n_layers else done[key] + hops  # readout, loss
            elif t.layer > 0:
                ready_at[(t.sample, t.layer - 1, True)] = arrive
    return end + max(update_cycles)


def traffic_model(cfg: SpikeforgeConfig, mean_active: dict[str, float] | None = None) -> dict[str, Any]:
    """Bytes to and from host memory per training sample (see the module docstring)."""
    f, T, B = cfg.formats, cfg.network.timesteps, cfg.training.batch_size
    L = cfg.network.layers
    sample_in = _ceil(L[0] * f.pixel_bits, 8) + 12  # pixels + SAMPLE header (label, count, seed)
    result_out = 8  # TRAIN response: status + prediction
    ours = sample_in + result_out
    neurons = sum(L[1:])
    weights = sum(a * b for a, b in zip(L[1:], L[:-1]))
    state_bits = f.membrane_bits + 1 + cfg.surrogate.bits  # v, s, g per neuron and timestep
    fwd_write = T * neurons * state_bits / 8
    bwd_read = fwd_write
    inputs = T * L[0] / 8  # the encoded input spikes, written and read
    err = 2 * T * neurons * f.error_bits / 8  # errors written and read once
    wts = (2 * weights * f.weight_bits / 8 + weights * f.grad_bits / 8 * 2) / B  # W read twice, ΔW read+written
    dense = sample_in + result_out + fwd_write + bwd_read + 2 * inputs + err + wts
    # for a network too large for the cores' memories: weights read in and written back per batch
    streamed = ours + 2 * weights * f.weight_bits / 8 / B
    return {
        "bytes_per_sample": round(ours, 1),
        "bytes_per_sample_weights_streamed": round(streamed, 1),
        "traffic_ratio_weights_streamed": round(streamed / dense, 5),
        "dense_bptt_bytes_per_sample": round(dense, 1),
        "traffic_ratio": round(ours / dense, 5),
        "terms": {
            "this dataflow": {"sample in": sample_in, "result out": result_out},
            "dense BPTT": {"sample in + result out": sample_in + result_out,
                           "state written in forward (v, s, g per neuron and step)": round(fwd_write, 1),
                           "state read in backward": round(bwd_read, 1),
                           "encoded input spikes written + read": round(2 * inputs, 1),
                           "errors written + read": round(err, 1),
                           "weights read twice + gradients read and written, per sample": round(wts, 1)},
        },
    }


def layer_costs(cfg: SpikeforgeConfig, activity, batch: int) -> list[int]:
    """Profile for the mapper: modelled cycles per neuron and sample of each LIF layer."""
    n_layers = len(cfg.layer_shapes)
    cyc = [0] * n_layers
    for t in core_tasks(cfg, activity, batch):
        cyc[t.layer] += t.cycles
    return [max(1, round(cyc[l] / (batch * cfg.network.layers[l + 1]))) for l in range(n_layers)]


def measured_layer_costs(placement, counters: list[dict[str, int]], samples: int) -> list[int] | None:
    """The mapper's profile (``hardware.neuron_cost``) as the multi-core RTL measured it: per
    layer, its cores' work per neuron and sample. A core's work is FP busy + BP busy + the cycles
    WG accumulates alone (WG mostly runs under BP's propagation); waits for other cores are not
    work. None when a core holds more than one layer (its work cannot be split)."""
    if any(len(held) != 1 for held in placement.cores):
        return None
    n = len(placement.layers) - 1
    work, neurons = [0] * n, [0] * n
    for held, c in zip(placement.cores, counters):
        s = held[0]
        work[s.layer] += c["fp_busy"] + c["bp_busy"] + c["wg_cycles"]
        neurons[s.layer] += s.neurons
    return [max(1, round(w / (nn * samples))) for w, nn in zip(work, neurons)]


def bench_scaling(cfg: SpikeforgeConfig, core_counts=CORE_COUNTS, batches: int = 2, buffers: int = 8,
                  balance: str = "profile", progress: bool = True) -> dict[str, Any]:
    """Train ``batches`` real batches on the golden multi-core model at every core count (same
    weights at every count, checked) and schedule them with the cycle model."""
    from spikeforge.data import load_dataset
    from spikeforge.golden.multicore import MultiCoreGolden
    from spikeforge.train import _seeds, weights_sha256

    hw = cfg.hardware
    data = load_dataset("digits" if cfg.network.layers[0] == 64 else "mnist", cfg.formats.pixel_bits,
                        cfg.training.split_seed)
    B = cfg.training.batch_size
    n_layers = len(cfg.layer_shapes)
    rows, hashes = [], {}
    t0 = time.perf_counter()
    costs = None
    for n in core_counts:
        # capacity is the configured core's; a count too small for the network is modelled anyway
        # (its memories would be larger), so the one-core row is the reference of the efficiency
        placement = place(cfg.network.layers, n, 1 << 30, 1 << 40, costs, align=hw.lanes)
        be = MultiCoreGolden(cfg, placement=placement)
        be.activity = []
        cycles = 0
        for k in range(batches):
            idx = torch.arange(k * B, (k + 1) * B)
            be.train_batch(data.train_x[idx], _seeds(cfg.training.seed, 0, idx), data.train_y[idx])
            acts = be.activity[-1]
            upd = [sum(s.neurons * _ceil(s.fan_in, hw.lanes) for s in held) for held in placement.cores]
            cycles += schedule_batch(core_tasks(cfg, acts, B), n, n_layers, B, upd, buffers)
        hashes[n] = weights_sha256(be.weights, cfg.formats.weight_bits)
        if costs is None and balance == "profile":
            costs = layer_costs(cfg, be.activity[0], B)  # from the first row's first batch
        spm = batches * B / cycles * 1e6
        rows.append({"cores": n, "samples_per_mcycle": round(spm, 3), "cycles": cycles,
                     "max_core_synapses": max(sum(s.synapses for s in h) for h in placement.cores)})
        if progress:
            print(f"  {n:>2} cores: {spm:10.2f} samples per million cycles ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    same, eff = _efficiency(rows, hashes)
    report = {
        "benchmark": "scaling",
        "method": "cycle model on golden multi-core activity (see spikeforge/scaling.py), samples pipelined; "
                  "the multi-core RTL runs one sample at a time (measure it with --rtl)",
        "network": list(cfg.network.layers),
        "lanes": hw.lanes,
        "batch_size": B,
        "batches": batches,
        "state_buffers_per_core": buffers,
        "placement": {"balance": balance, "neuron_cost_per_layer": costs},
        "rows": rows,
        "weights_identical_across_core_counts": same,
        "weights_sha256": hashes,
        "goal": {"efficiency_at_8": 0.8, "efficiency_at_20": 0.7, "traffic_ratio": 0.45},
        "traffic": traffic_model(cfg),
    }
    report["traffic_ratio"] = report["traffic"]["traffic_ratio"]
    report["goal_met"] = _goal(same, eff, report["traffic_ratio"])
    return report


def _goal(same: bool, eff: dict[int, float], traffic_ratio: float) -> bool | None:
    """The issue's goals (efficiency >= 0.8 at 8 cores, >= 0.7 at 20, against one core; traffic
    ratio <= 0.45); None when the rows do not include 1, 8 and 20 cores (nothing to judge)."""
    if not {1, 8, 20} <= set(eff):
        return None
    return same and eff[8] >= 0.8 and eff[20] >= 0.7 and traffic_ratio <= 0.45


def _efficiency(rows: list[dict[str, Any]], hashes: dict[int, str]) -> tuple[bool, dict[int, float]]:
    """Fill each row's parallel efficiency against the first row; (same weights at every count,
    efficiency by core count)."""
    base = rows[0]["samples_per_mcycle"] / rows[0]["cores"]
    for r in rows:
        r["efficiency"] = round(r["samples_per_mcycle"] / (r["cores"] * base), 4)
    return len(set(hashes.values())) == 1, {r["cores"]: r["efficiency"] for r in rows}


def scaling_summary(r: dict[str, Any]) -> str:
    lines = [f"spikeforge scaling ({r['method'].split(';')[0]})",
             f"  network {r['network']}, {r['lanes']} lanes, batch {r['batch_size']}, {r['batches']} batches "
             "(a row with too few cores for the configured core uses larger cores)",
             f"  {'cores':>5}  {'samples/Mcycle':>14}  {'efficiency':>10}"]
    for row in r["rows"]:
        lines.append(f"  {row['cores']:>5}  {row['samples_per_mcycle']:>14.2f}  {row['efficiency']:>10.3f}")
    t = r["traffic"]
    lines.append(f"  off-chip bytes per sample: {t['bytes_per_sample']} vs dense BPTT {t['dense_bptt_bytes_per_sample']}"
                 f" (traffic_ratio {r['traffic_ratio']}, goal <= 0.45)")
    lines.append(f"  same weights on every core count: {r['weights_identical_across_core_counts']}")
    verdict = {True: "met", False: "NOT met", None: "not judged (needs rows for 1, 8 and 20 cores)"}[r["goal_met"]]
    lines.append(f"  goals (efficiency >= 0.8 at 8, >= 0.7 at 20, against 1 core; traffic): {verdict}")
    return "\n".join(lines)


def bench_scaling_rtl(cfg: SpikeforgeConfig, core_counts=(1, 2, 4, 8), samples: int | None = None,
                      cxx_opt: str | None = None, progress: bool = True, buffers: int | None = None) -> dict[str, Any]:
    """Measured, not modelled: train ``samples`` real samples on the multi-core RTL
    (``MultiCoreTop`` under Verilator, in lockstep with the golden multi-core model) at each core
    count and count the cycles the cores spend training and updating.

    ``buffers`` (default ``hardware.sample_buffers``): samples in flight per core. With one, the
    whole accelerator finishes a sample before the next starts, and the cycles are those from
    issuing TRAIN to every core until the last answers (the host's SAMPLE transfers not counted).
    With more, samples pipeline through the cores: each core runs its own command stream for the
    batch, and the cycles are those from the first command of the batch until the last core
    answers, SAMPLE transfers included. A core count for which the configured core is too small
    is built with a larger core (``core_neurons``/``core_synapses`` raised to fit), as the model
    does."""
    from spikeforge.mapper import MappingError
    from spikeforge.rtl.multicore import default_placement
    from spikeforge.sim.cosim_multicore import run_multicore

    B = cfg.training.batch_size
    samples = samples or B
    buffers = buffers or cfg.hardware.sample_buffers
    rows, hashes = [], {}
    t0 = time.perf_counter()
    for n in core_counts:
        c = cfg.replace(hardware={"cores": n, "sample_buffers": buffers})
        try:
            default_placement(c)
        except MappingError:
            c = c.replace(hardware={"core_neurons": sum(cfg.network.layers[1:]),
                                    "core_synapses": sum(o * i for o, i in cfg.layer_shapes)})
        res, out = run_multicore(c, "lockstep", {"lockstep": {"samples": samples, "epochs": 1},
                                                 "replay": f"spikeforge bench scaling --rtl --cores {n}"},
                                 seed=1, cxx_opt=cxx_opt)
        if not res.passed or out is None:
            raise RuntimeError(f"{n} cores: the multi-core RTL run failed\n{res.report()}")
        cycles = out["cycles_in"]["TRAIN"] + out["cycles_in"]["UPDATE"]
        spm = out["samples_trained"] / cycles * 1e6
        placement = default_placement(c)
        hashes[n] = out["weights_sha256"]
        rows.append({"cores": n, "samples_per_mcycle": round(spm, 3), "cycles": cycles,
                     "train_cycles_per_sample": round(out["cycles_in"]["TRAIN"] / out["samples_trained"]),
                     "update_cycles": out["cycles_in"]["UPDATE"],
                     "placement": [" ".join(map(str, h)) for h in placement.cores],
                     "neuron_cost_per_layer": measured_layer_costs(placement, out["counters"], out["samples_trained"])})
        if progress:
            print(f"  {n:>2} cores: {spm:10.2f} samples per million cycles, measured ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    same, eff = _efficiency(rows, hashes)
    return {
        "benchmark": "scaling",
        "method": ("measured on the multi-core RTL (Verilator, lockstep with golden); one sample in flight, "
                   "host SAMPLE transfers not counted" if buffers == 1 else
                   f"measured on the multi-core RTL (Verilator, lockstep with golden); samples pipeline through the "
                   f"cores, {buffers} buffers per core, host SAMPLE transfers counted"),
        "sample_buffers": buffers,
        "network": list(cfg.network.layers),
        "lanes": cfg.hardware.lanes,
        "batch_size": B,
        "samples": rows and samples,
        "batches": -(-samples // B),
        "rows": rows,
        "weights_identical_across_core_counts": same,
        "weights_sha256": hashes,
        "goal": {"efficiency_at_8": 0.8, "efficiency_at_20": 0.7},
        "traffic": traffic_model(cfg),
        "traffic_ratio": traffic_model(cfg)["traffic_ratio"],
        "goal_met": _goal(same, eff, traffic_model(cfg)["traffic_ratio"]),
    }

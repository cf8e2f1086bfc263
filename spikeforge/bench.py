"""Benchmarks that print measured figures (never timed tests).

``bench_golden``: training throughput of the bit-exact golden model against snnTorch float BPTT on
the same network, timesteps, batch size and samples, measured in the same process, same thread
count. Each side trains ``samples`` samples ``repeats`` times; the best run of each is reported
(least disturbed by the rest of the machine).
"""

from __future__ import annotations

import platform
import sys
import time

import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.data import load_dataset

__all__ = ["bench_golden", "summary", "work_bounds", "rtl_bench_job", "bench_rtl", "rtl_summary", "ENGINES"]

ENGINES = ("fp", "bp", "wg")
RATIO_GOAL = 1.25


def _golden_run(cfg: SpikeforgeConfig, x: torch.Tensor, y: torch.Tensor) -> float:
    from spikeforge.golden import GoldenBackend
    from spikeforge.train import _seeds

    be = GoldenBackend(cfg)
    bs = cfg.training.batch_size
    t0 = time.perf_counter()
    for lo in range(0, len(x), bs):
        idx = torch.arange(lo, min(lo + bs, len(x)))
        be.train_batch(x[idx], _seeds(cfg.training.seed, 0, idx), y[idx])
    return time.perf_counter() - t0


def _snntorch_net(cfg: SpikeforgeConfig):
    import snntorch as snn
    from snntorch import surrogate

    beta = cfg.neuron.beta_q / (1 << cfg.neuron.beta_bits)
    layers = []
    for n_out, n_in in cfg.layer_shapes:
        layers.append(torch.nn.Linear(n_in, n_out, bias=False))
        layers.append(snn.Leaky(beta=beta, threshold=1.0, spike_grad=surrogate.fast_sigmoid(), reset_mechanism="subtract"))
    return torch.nn.ModuleList(layers)


def _snntorch_run(cfg: SpikeforgeConfig, x: torch.Tensor, y: torch.Tensor) -> float:
    from snntorch import functional as SF
    from snntorch import spikegen

    torch.manual_seed(cfg.training.seed)
    net = _snntorch_net(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.1)
    T = cfg.network.timesteps
    bs = cfg.training.batch_size
    full = float((1 << cfg.formats.pixel_bits) - 1)
    t0 = time.perf_counter()
    for lo in range(0, len(x), bs):
        xb = x[lo : lo + bs].to(torch.float32) / full
        yb = y[lo : lo + bs]
        spk_in = spikegen.rate(xb, num_steps=T)
        mems = [None] * (len(net) // 2)
        for k in range(len(mems)):
            mems[k] = net[2 * k + 1].init_leaky()
        out = []
        for t in range(T):
            h = spk_in[t]
            for k in range(len(mems)):
                h, mems[k] = net[2 * k + 1](net[2 * k](h), mems[k])
            out.append(h)
        loss = loss_fn(torch.stack(out), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def bench_golden(cfg: SpikeforgeConfig, samples: int = 512, repeats: int = 3, progress: bool = True) -> dict:
    data = load_dataset("digits", cfg.formats.pixel_bits, cfg.training.split_seed, samples)
    x, y = data.train_x, data.train_y
    n = len(x)
    times = {"golden": [], "snntorch": []}
    for r in range(repeats):
        for name, fn in (("golden", _golden_run), ("snntorch", _snntorch_run)):
            dt = fn(cfg, x, y)
            times[name].append(dt)
            if progress:
                print(f"  run {r + 1}/{repeats} {name:<8} {n / dt:8.1f} samples/s", file=sys.stderr)
    g = n / min(times["golden"])
    s = n / min(times["snntorch"])
    return {
        "benchmark": "golden_vs_snntorch_training",
        "samples": n,
        "timesteps": cfg.network.timesteps,
        "batch_size": cfg.training.batch_size,
        "layers": list(cfg.network.layers),
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "golden_samples_per_s": round(g, 2),
        "snntorch_samples_per_s": round(s, 2),
        "ratio": round(g / s, 3),
        "golden_seconds": [round(t, 4) for t in times["golden"]],
        "snntorch_seconds": [round(t, 4) for t in times["snntorch"]],
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "config": cfg.to_dict(),
    }


def summary(r: dict) -> str:
    return (
        "spikeforge benchmark: golden model vs snnTorch float BPTT (training)\n"
        f"  network {'-'.join(map(str, r['layers']))}, T={r['timesteps']}, batch {r['batch_size']}, "
        f"{r['samples']} samples, best of {r['repeats']}, {r['torch_threads']} torch threads\n"
        f"  golden    {r['golden_samples_per_s']:10.1f} samples/s\n"
        f"  snnTorch  {r['snntorch_samples_per_s']:10.1f} samples/s\n"
        f"  ratio     {r['ratio']:10.3f}  (golden / snnTorch; goal >= 1.0)"
    )


# ---------------------------------------------------------------------------------------------
# RTL efficiency: hardware busy counters against the work bound (docs/efficiency.md)


def work_bounds(cfg: SpikeforgeConfig, x: torch.Tensor, trace) -> dict[str, int]:
    """Work bound, in cycles of a P-lane engine, of one training step on input spikes ``x``
    (T, 1, N_in), given the golden ``trace`` (forward and backward) of that step.

    Per layer l with G = ceil(N_out/P) output groups and H = ceil(N_in/P) input groups, per timestep:

    * FP: nnz(x_l[t]) * G (each input spike adds one weight column, P per cycle) + G (LIF step);
    * BP: G (δ recursion) + for l > 0: nnz(δ_l[t]) * H (one Wᵀ row per non-zero δ) + H (round ε');
    * WG: nnz(x_l[t]) * nzg(δ_l[t]) (one gradient column slice per input spike and non-zero δ
      group) + G (finding the non-zero δ groups).
    """
    P, T = cfg.hardware.lanes, cfg.network.timesteps
    L = cfg.network.layers
    inputs = [x] + [lf.spikes for lf in trace.forward[:-1]]
    out = {e: 0 for e in ENGINES}
    for l, lb in enumerate(trace.backward):
        G, H = -(-L[l + 1] // P), -(-L[l] // P)
        nnz = inputs[l][:, 0, :].ne(0).sum(1)  # (T,)
        out["fp"] += int(nnz.sum()) * G + T * G
        d = lb.delta[:, 0, :]
        out["bp"] += T * G + ((int(d.ne(0).sum()) * H + T * H) if l > 0 else 0)
        padded = torch.zeros(T, G * P, dtype=d.dtype)
        padded[:, : L[l + 1]] = d
        nzg = padded.reshape(T, G, P).ne(0).any(2).sum(1)
        out["wg"] += int((nnz * nzg).sum()) + T * G
    return out


def rtl_bench_job(client, opts: dict) -> dict:
    """Runs inside the cocotb bench (blocking client code): per density, one mini-batch of
    training steps on random input spikes of that density, from the same initial weights."""
    from spikeforge.golden import model
    from spikeforge.golden.backend import update_seed

    cfg = client.cfg
    T, L = cfg.network.timesteps, cfg.network.layers
    n = min(int(opts.get("samples", cfg.training.batch_size)), cfg.training.batch_size)
    w0 = model.init_weights(cfg)
    client.check_info()
    client.clear_error()
    rows, runs = [], []
    for d in opts["densities"]:
        client.load_weights(w0)
        client.set_config(lr_shift=cfg.training.lr_shift, update_lfsr_state=update_seed(cfg))
        gen = torch.Generator().manual_seed(int(round(d * 1000)) + 7919 * int(opts.get("seed", 1)))
        bound = {e: 0 for e in ENGINES}
        spikes = 0
        client.clear_counters()
        t_all = time.perf_counter()
        t_run = 0.0
        for s in range(n):
            x = (torch.rand(T, L[0], generator=gen) < d).to(torch.int64)
            spikes += int(x.sum())
            label = s % L[-1]
            client.sample([0] * L[0], label, 0)
            client.write_spikes(x)
            tr = model.forward(cfg, w0, x.reshape(T, 1, L[0]))
            model.backward(cfg, w0, tr, torch.tensor([label]))
            for e, v in work_bounds(cfg, x.reshape(T, 1, L[0]), tr).items():
                bound[e] += v
            t0 = time.perf_counter()
            client.train(spikes=True)
            t_run += time.perf_counter() - t0
        c = client.counters()
        t_all = time.perf_counter() - t_all
        client.update()
        for e in ENGINES:
            rows.append({"engine": e, "density": d, "busy_cycles": c[f"{e}_busy"], "bound_cycles": bound[e],
                         "ratio": round(c[f"{e}_busy"] / max(1, bound[e]), 4)})
        run_cycles = c["encode_cycles"] + c["fp_cycles"] + c["bp_cycles"] + c["wg_cycles"]
        runs.append({"density": d, "measured_input_density": round(spikes / (n * T * L[0]), 4), "samples": n,
                     "counters": c, "core_cycles_per_s": round(run_cycles / t_run),
                     "host_cycles_per_s": round(c["cycles"] / t_all)})
    return {"rows": rows, "runs": runs}


def bench_rtl(cfg: SpikeforgeConfig, densities=(0.1, 0.5, 1.0), samples: int | None = None, seed: int = 1,
              progress: bool = True) -> dict:
    from spikeforge.sim.cosim_core import build_core, run_core

    build_core(cfg, progress=progress)
    if progress:
        print(f"running {len(densities)} densities on the Verilator model", file=sys.stderr)
    opts = {"densities": list(densities), "samples": samples or cfg.training.batch_size, "seed": seed}
    res, out = run_core(cfg, "bench", {"bench": opts}, seed=seed)
    if not res.passed or out is None:
        raise RuntimeError(f"RTL benchmark failed:\n{res.report()}")
    rows = out["rows"]
    by = {(r["engine"], r["density"]): r for r in rows}
    ds = sorted(densities)
    falls = {e: all(by[(e, a)]["busy_cycles"] < by[(e, b)]["busy_cycles"] for a, b in zip(ds, ds[1:])) for e in ENGINES}
    worst = max(r["ratio"] for r in rows)
    return {
        "benchmark": "rtl_engine_efficiency",
        "rows": rows,
        "ratio_goal": RATIO_GOAL,
        "max_ratio": worst,
        "cycles_fall_with_density": falls,
        "goal_met": worst <= RATIO_GOAL and all(falls.values()),
        "simulated_cycles_per_s": {"core_running": min(r["core_cycles_per_s"] for r in out["runs"]),
                                   "with_host_protocol": min(r["host_cycles_per_s"] for r in out["runs"])},
        "runs": out["runs"],
        "lanes": cfg.hardware.lanes,
        "layers": list(cfg.network.layers),
        "timesteps": cfg.network.timesteps,
        "bound_definition": "docs/efficiency.md",
        "config": cfg.to_dict(),
    }


def rtl_summary(r: dict) -> str:
    lines = ["spikeforge benchmark: engine busy cycles (hardware counters) vs work bound",
             f"  network {'-'.join(map(str, r['layers']))}, T={r['timesteps']}, {r['lanes']} lanes, "
             f"{r['runs'][0]['samples']} training steps per density (bound: {r['bound_definition']})",
             f"  {'engine':<6} {'density':>7} {'busy':>10} {'bound':>10} {'ratio':>7}"]
    for row in r["rows"]:
        flag = "" if row["ratio"] <= r["ratio_goal"] else "  > goal"
        lines.append(f"  {row['engine']:<6} {row['density']:>7.2f} {row['busy_cycles']:>10,} {row['bound_cycles']:>10,} "
                     f"{row['ratio']:>7.3f}{flag}")
    falls = ", ".join(f"{e} {'yes' if ok else 'NO'}" for e, ok in r["cycles_fall_with_density"].items())
    cps = r["simulated_cycles_per_s"]
    lines += [f"  max ratio {r['max_ratio']:.3f} (goal <= {r['ratio_goal']}); cycles fall with density: {falls}",
              f"  Verilator: {cps['core_running']:,} cycles/s while the core runs, "
              f"{cps['with_host_protocol']:,} cycles/s including host-protocol traffic",
              f"  goal {'met' if r['goal_met'] else 'NOT met'}"]
    return "\n".join(lines)

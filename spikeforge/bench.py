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

__all__ = ["bench_golden", "summary"]


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

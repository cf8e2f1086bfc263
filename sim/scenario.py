"""Co-simulation scenarios: a config, initial weights and batches of samples, run through the host
protocol and compared with the golden model on every exposed intermediate.

A scenario is fully determined by its name and seed (:func:`make_scenario`), so the pytest side
can build the hardware for its config and the bench -- in another process -- regenerates the same
stimulus from the two values it is given. :func:`run_and_check` is blocking client code: it runs
in the Amaranth-sim worker thread or in a cocotb ``bridge`` thread alike.

Compared exactly, per sample: every FP output group of every layer and timestep (membranes,
spikes, surrogates; from the trace port), the spike bitmaps and the output membranes read back
over the host port, and the prediction; when training, every δ group of every layer and timestep
(trace port); per batch, the accumulated gradients (ΔW, read over the host port) and the
updated weights.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from spikeforge.config import ConfigError, SpikeforgeConfig, load_config
from spikeforge.golden import encoder, lfsr, model
from spikeforge.rtl.protocol import RegionId

from .driver import Client

__all__ = ["Sample", "Scenario", "Trace", "Mismatch", "make_scenario", "random_config", "small_cfg", "DIRECTED",
           "run_and_check"]


@dataclass
class Sample:
    label: int
    seed: int  # encoder seed (pixel samples)
    pixels: list[int] | None = None  # encoded on chip
    spikes: torch.Tensor | None = None  # (T, N_in) 0/1, written to SPIKES+0

    def input_spikes(self, cfg: SpikeforgeConfig) -> torch.Tensor:
        """(T, 1, N_in): the given spikes, or what the on-chip encoder makes of the pixels."""
        T, n = cfg.network.timesteps, cfg.network.layers[0]
        if self.spikes is not None:
            return self.spikes.reshape(T, 1, n)
        return encoder.encode(torch.tensor([self.pixels]), torch.tensor([self.seed]), T, cfg.formats.pixel_bits)


@dataclass
class Scenario:
    name: str
    seed: int
    cfg: SpikeforgeConfig
    weights: list[torch.Tensor]
    batches: list[list[Sample]]
    train: bool = True
    lfsr_state: int = 1

    def describe(self) -> str:
        c = self.cfg
        return (f"{self.name} seed {self.seed}: layers {list(c.network.layers)} T {c.network.timesteps} "
                f"lanes {c.hardware.lanes} w{c.formats.weight_bits} v{c.formats.membrane_bits} "
                f"e{c.formats.error_bits} reset {c.neuron.reset} surrogate {c.surrogate.kind} "
                f"update {c.training.update_rounding} batches {[len(b) for b in self.batches]}")


@dataclass
class Trace:
    """What the trace-port monitors saw since the last :meth:`clear`."""

    fp: list[tuple] = field(default_factory=list)  # (layer, group, membranes, spikes, surrogates)
    bp: list[tuple] = field(default_factory=list)  # (layer, group, deltas)

    def clear(self) -> None:
        self.fp.clear()
        self.bp.clear()


class Mismatch(AssertionError):
    pass


# ---------------------------------------------------------------------------------------------
# stimulus


def small_cfg() -> SpikeforgeConfig:
    """A small network for host-protocol and UART tests: 12-6-3, T = 3, 4 lanes, batch 2,
    stochastic update rounding."""
    return load_config(_DIGITS).replace(
        network={"layers": [12, 6, 3], "timesteps": 3}, hardware={"lanes": 4},
        training={"target_true": 2, "target_false": 0, "batch_size": 2, "lr_shift": 4, "lr_decay_epochs": [],
                  "update_rounding": "stochastic"})


def random_config(rng: random.Random) -> SpikeforgeConfig:
    """A valid config with random widths, lanes, layer sizes, reset mode, surrogate, batch size."""
    base = load_config(_DIGITS)
    for _ in range(1000):
        wb = rng.randint(4, 8)
        mb = rng.randint(10, 16)
        lanes = rng.choice([1, 2, 4, 8])
        layers = [rng.randint(3, 40)] + [rng.randint(2, 24) for _ in range(rng.choice([0, 1, 1, 2]))] + [rng.randint(2, 10)]
        T = rng.randint(2, 6)
        vmax = (1 << (mb - 1)) - 1
        thr = rng.randint(1 << (wb - 1), min(vmax - 1, 6 << (wb - 1)))
        kind = rng.choice(["rect", "triangle"])
        sbits = 1 if kind == "rect" else rng.randint(1, 4)
        width = 1 << rng.randint(sbits, mb - 2) if kind == "triangle" else rng.randint(1, thr)
        eb = rng.randint(6, 16)
        try:
            return base.replace(
                name=f"random-{rng.getrandbits(16):04x}",
                network={"layers": layers, "timesteps": T},
                neuron={"threshold": thr, "beta": rng.choice([0.5, 0.75, 0.875, 1.0]), "beta_bits": 3,
                        "reset": rng.choice(["subtract", "zero"]), "leak_rounding": rng.choice(["floor", "half_up"]),
                        "membrane_floor": rng.choice([None, -thr, -2 * thr])},
                formats={"pixel_bits": rng.randint(2, 8), "weight_bits": wb, "membrane_bits": mb,
                         "input_acc_bits": mb, "error_bits": eb, "grad_bits": rng.randint(eb + 4, 32)},
                surrogate={"kind": kind, "width": width, "bits": sbits},
                training={"batch_size": rng.randint(1, 3), "target_true": rng.randint(1, T), "target_false": 0,
                          "loss": rng.choice(["count_hinge", "count_mse"]),
                          "output_error_shift": rng.randint(0, min(8, eb - 2)), "error_shift": rng.randint(0, 10),
                          "error_rounding": rng.choice(["floor", "half_up", "half_even"]),
                          "lr_shift": rng.randint(0, 8), "lr_decay_epochs": [],
                          "update_rounding": rng.choice(["floor", "half_up", "half_even", "stochastic"])},
                hardware={"lanes": lanes},
            )
        except ConfigError:
            continue
    raise RuntimeError("random_config: no valid config in 1000 tries")


_DIGITS = __import__("pathlib").Path(__file__).resolve().parent.parent / "configs" / "digits.toml"


def _random_weights(cfg: SpikeforgeConfig, rng: random.Random, bias: float = 0.3) -> list[torch.Tensor]:
    wmax = (1 << (cfg.formats.weight_bits - 1)) - 1
    L = cfg.network.layers
    g = torch.Generator().manual_seed(rng.getrandbits(31))
    out = []
    for l in range(len(L) - 1):
        w = torch.randint(-wmax - 1, wmax + 1, (L[l + 1], L[l]), generator=g)
        pos = torch.rand((L[l + 1], L[l]), generator=g) < bias  # lean positive so layers fire
        out.append(torch.where(pos, w.abs().clamp(max=wmax), w))
    return out


def _samples(cfg: SpikeforgeConfig, rng: random.Random, n: int, density: float | None = None,
             spikes: bool | None = None) -> list[Sample]:
    L, T = cfg.network.layers, cfg.network.timesteps
    pmax = (1 << cfg.formats.pixel_bits) - 1
    out = []
    for _ in range(n):
        d = rng.choice([0.0, 0.1, 0.5, 1.0]) if density is None else density
        label = rng.randrange(L[-1])
        if spikes if spikes is not None else rng.random() < 0.3:
            s = torch.tensor([[1 if rng.random() < d else 0 for _ in range(L[0])] for _ in range(T)])
            out.append(Sample(label, 0, spikes=s))
        else:
            px = [rng.randint(0, pmax) if rng.random() < max(d, 0.05) else 0 for _ in range(L[0])]
            out.append(Sample(label, rng.getrandbits(32), pixels=px))
    return out


def _small(**sections) -> SpikeforgeConfig:
    base = load_config(_DIGITS).replace(network={"layers": [20, 12, 5], "timesteps": 4}, hardware={"lanes": 4},
                                        training={"target_true": 3, "target_false": 1, "batch_size": 2,
                                                  "lr_shift": 6, "lr_decay_epochs": []})
    return base.replace(**sections) if sections else base


def _directed(name: str, rng: random.Random) -> Scenario:
    """Edge cases of docs/arithmetic.md, each on a small network."""
    cfg = _small()
    wmax = (1 << (cfg.formats.weight_bits - 1)) - 1
    L = cfg.network.layers
    weights = _random_weights(cfg, rng)
    batches = [_samples(cfg, rng, 2), _samples(cfg, rng, 2)]
    if name == "silent-input":  # no input spike at all: FP and WG do no integration work
        batches = [_samples(cfg, rng, 2, density=0.0, spikes=True)]
    elif name == "saturate-high":  # every input fires into maximal weights: membranes hit the rail
        cfg = _small(neuron={"membrane_floor": -1024}, formats={"membrane_bits": 12, "input_acc_bits": 16})
        weights = [torch.full((L[l + 1], L[l]), wmax) for l in range(len(L) - 1)]
        batches = [_samples(cfg, rng, 2, density=1.0, spikes=True)]
    elif name == "floor":  # minimal weights: membranes sit on the floor, errors from silence
        weights = [torch.full((L[l + 1], L[l]), -wmax - 1) for l in range(len(L) - 1)]
        batches = [_samples(cfg, rng, 2, density=1.0)]
    elif name == "zero-reset-rect":
        cfg = _small(neuron={"reset": "zero"}, surrogate={"kind": "rect", "width": 200, "bits": 1})
    elif name == "error-saturation":  # narrow errors and no shifts: δ and ε' saturate
        cfg = _small(formats={"error_bits": 6, "grad_bits": 14}, training={"output_error_shift": 4, "error_shift": 0})
    elif name == "partial-groups":  # layer sizes that are no multiple of the lanes
        cfg = _small(network={"layers": [13, 7, 3]}, hardware={"lanes": 4})
        weights = _random_weights(cfg, rng)
        batches = [_samples(cfg, rng, 2), _samples(cfg, rng, 1)]
    elif name in ("update-floor", "update-half-up", "update-half-even", "update-stochastic"):
        mode = name.removeprefix("update-").replace("-", "_")
        cfg = _small(training={"update_rounding": mode, "lr_shift": 3})
    elif name == "lr-shift-0":  # the whole gradient in one step: weights saturate
        cfg = _small(training={"lr_shift": 0, "update_rounding": "floor"})
    elif name == "single-port-gradients":  # iCE40 SPRAM mode: half-rate WG, cleared after reset
        cfg = _small(network={"layers": [13, 7, 3]}, hardware={"lanes": 1, "large_memories": "single_port"})
        weights = _random_weights(cfg, rng)
        batches = [_samples(cfg, rng, 2), _samples(cfg, rng, 2)]
    elif name == "inference-only":
        return Scenario(name, 0, cfg, weights, [_samples(cfg, rng, 3)], train=False)
    else:
        raise ValueError(f"unknown directed scenario {name!r}; known: {', '.join(DIRECTED)}")
    return Scenario(name, 0, cfg, weights, batches, lfsr_state=rng.getrandbits(32))


DIRECTED = ("silent-input", "saturate-high", "floor", "zero-reset-rect", "error-saturation", "partial-groups",
            "update-floor", "update-half-up", "update-half-even", "update-stochastic", "lr-shift-0",
            "inference-only", "single-port-gradients")


def make_scenario(name: str, seed: int) -> Scenario:
    """``name`` is ``"random"`` (constrained-random config and stimulus from ``seed``) or one of
    :data:`DIRECTED`."""
    rng = random.Random(f"{name}/{seed}")
    if name != "random":
        sc = _directed(name, rng)
        sc.seed = seed
        return sc
    cfg = random_config(rng)
    n_batches = rng.randint(1, 3)
    batches = [_samples(cfg, rng, rng.randint(1, cfg.training.batch_size)) for _ in range(n_batches)]
    return Scenario("random", seed, cfg, _random_weights(cfg, rng, bias=rng.choice([0.2, 0.5, 0.8])), batches,
                    train=rng.random() < 0.85, lfsr_state=rng.getrandbits(32))


# ---------------------------------------------------------------------------------------------
# run and compare


def _first_mismatch(name: str, rtl: torch.Tensor, ref: torch.Tensor, dims: tuple[str, ...]) -> str | None:
    if rtl.shape != ref.shape:
        return f"{name}: shape {tuple(rtl.shape)} != golden {tuple(ref.shape)}"
    bad = torch.nonzero(rtl != ref)
    if not len(bad):
        return None
    pos = tuple(bad[0].tolist())
    where = ", ".join(f"{d} {v}" for d, v in zip(dims, pos))
    return f"{name} at {where}: rtl {int(rtl[pos])} != golden {int(ref[pos])} ({len(bad)} elements differ)"


class _Checker:
    def __init__(self, sc: Scenario, replay: str):
        self.sc, self.replay = sc, replay
        self.compared = 0

    def same(self, name: str, rtl: torch.Tensor, ref: torch.Tensor, dims: tuple[str, ...]) -> None:
        msg = _first_mismatch(name, rtl.to(torch.int64), ref.to(torch.int64), dims)
        if msg:
            raise Mismatch(f"seed {self.sc.seed} ({self.sc.describe()})\n  first mismatch: {msg}\n"
                           f"  replay: {self.replay}")
        self.compared += rtl.numel()


def _fp_tensors(cfg: SpikeforgeConfig, records: list[tuple]) -> list[dict[str, torch.Tensor]]:
    """Per layer: membrane, spikes, surrogate as (T, N) from the trace records of one sample."""
    P, T, L = cfg.hardware.lanes, cfg.network.timesteps, cfg.network.layers
    out = []
    for l in range(len(L) - 1):
        n, G = L[l + 1], -(-L[l + 1] // P)
        recs = [r for r in records if r[0] == l]
        if len(recs) != T * G:
            raise Mismatch(f"layer {l}: {len(recs)} FP output groups on the trace port, expected {T * G}")
        t_ = {k: torch.zeros(T, G * P, dtype=torch.int64) for k in ("membrane", "spikes", "surrogate", "group")}
        for k, (_, group, mem, spk, sur) in enumerate(recs):
            t, g = divmod(k, G)
            t_["group"][t, g] = group
            sl = slice(g * P, g * P + P)
            t_["membrane"][t, sl] = torch.tensor(mem)
            t_["spikes"][t, sl] = torch.tensor([(spk >> q) & 1 for q in range(P)])
            t_["surrogate"][t, sl] = torch.tensor(sur)
        out.append({k: v[:, :n] for k, v in t_.items() if k != "group"} | {"group": t_["group"][:, :G]})
    return out


def _bp_tensor(cfg: SpikeforgeConfig, records: list[tuple], l: int) -> tuple[torch.Tensor, torch.Tensor]:
    """δ of layer l as (T, N) and the group order seen, from one sample's trace (t descending)."""
    P, T, L = cfg.hardware.lanes, cfg.network.timesteps, cfg.network.layers
    n, G = L[l + 1], -(-L[l + 1] // P)
    recs = [r for r in records if r[0] == l]
    if len(recs) != T * G:
        raise Mismatch(f"layer {l}: {len(recs)} δ groups on the trace port, expected {T * G}")
    d = torch.zeros(T, G * P, dtype=torch.int64)
    groups = torch.zeros(T, G, dtype=torch.int64)
    for k, (_, group, deltas) in enumerate(recs):
        t, g = T - 1 - k // G, k % G
        groups[t, g] = group
        d[t, g * P:g * P + P] = torch.tensor(deltas)
    return d[:, :n], groups


def run_and_check(client: Client, sc: Scenario, trace: Trace, replay: str) -> dict:
    """Run ``sc`` on the core behind ``client`` and compare everything with golden; raise
    :class:`Mismatch` at the first difference. Returns counts for the report."""
    cfg = sc.cfg
    L, T, P = cfg.network.layers, cfg.network.timesteps, cfg.hardware.lanes
    chk = _Checker(sc, replay)
    client.check_info()
    client.clear_error()
    client.load_weights(sc.weights)
    client.set_config(lr_shift=cfg.training.lr_shift, update_lfsr_state=sc.lfsr_state)
    w_gold = [w.clone() for w in sc.weights]
    chk.same("weights as loaded", torch.cat([w.reshape(-1) for w in client.weights()]),
             torch.cat([w.reshape(-1) for w in w_gold]), ("element",))
    rng = lfsr.LfsrStream(sc.lfsr_state)
    samples = 0
    for b, batch in enumerate(sc.batches):
        grads = [torch.zeros_like(w) for w in w_gold]
        for s_i, s in enumerate(batch):
            where = f"batch {b} sample {s_i}"
            x = s.input_spikes(cfg)
            if s.spikes is not None:
                client.sample([0] * L[0], s.label, 0)
                client.write_spikes(s.spikes)
            else:
                client.sample(s.pixels, s.label, s.seed)
            gold = model.forward(cfg, w_gold, x)
            trace.clear()
            pred = client.train(spikes=s.spikes is not None) if sc.train else client.infer(spikes=s.spikes is not None)
            samples += 1
            fp = _fp_tensors(cfg, trace.fp)
            for l, lf in enumerate(gold.forward):
                G = -(-L[l + 1] // P)
                chk.same(f"{where} layer {l} FP group order", fp[l]["group"], torch.arange(G).expand(T, G), ("timestep", "slot"))
                for key, ref in (("membrane", lf.membrane), ("spikes", lf.spikes), ("surrogate", lf.surr)):
                    chk.same(f"{where} layer {l} {key}", fp[l][key], ref[:, 0, :], ("timestep", "neuron"))
            spikes = [x[:, 0, :]] + [lf.spikes[:, 0, :] for lf in gold.forward]
            for k, ref in enumerate(spikes):
                chk.same(f"{where} spikes{k} (host read)", client.matrix(RegionId.SPIKES + k), ref, ("timestep", "neuron"))
            chk.same(f"{where} output membranes (host read)", client.matrix(RegionId.MEMBRANES),
                     gold.forward[-1].membrane[:, 0, :], ("timestep", "neuron"))
            ref_pred = int(model.predict(gold.counts, gold.membrane_sum)[0])
            chk.same(f"{where} prediction", torch.tensor([pred]), torch.tensor([ref_pred]), ("index",))
            if not sc.train:
                continue
            model.backward(cfg, w_gold, gold, torch.tensor([s.label]))
            for l, lb in enumerate(gold.backward):
                d, groups = _bp_tensor(cfg, trace.bp, l)
                G = -(-L[l + 1] // P)
                chk.same(f"{where} layer {l} δ group order", groups, torch.arange(G).expand(T, G), ("timestep", "slot"))
                chk.same(f"{where} layer {l} delta", d, lb.delta[:, 0, :], ("timestep", "neuron"))
                grads[l] += lb.grad
        if not sc.train:
            continue
        for l, (g_rtl, g_ref) in enumerate(zip(client.gradients(), grads)):
            chk.same(f"batch {b} layer {l} accumulated gradient ΔW", g_rtl, g_ref, ("row", "col"))
        client.update()
        w_gold = model.apply_update(cfg, w_gold, grads, rng, cfg.training.lr_shift)
        for l, (w_rtl, w_ref) in enumerate(zip(client.weights(), w_gold)):
            chk.same(f"batch {b} layer {l} updated weights", w_rtl, w_ref, ("row", "col"))
    st = client.status()
    if st["error_code"]:
        raise Mismatch(f"seed {sc.seed}: the core flagged error {st['error_code']} during a valid run\n  replay: {replay}")
    return {"samples": samples, "elements_compared": chk.compared, "counters": client.counters()}

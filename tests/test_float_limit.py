"""The float limit: with wide formats the golden model is the float network it approximates.

Forward: membranes and spikes equal the float64 reference exactly (the leak is exact when the
membrane carries (T-1)*beta_bits fractional bits, and float64 holds every value exactly).
Backward: golden weight gradients point where torch.autograd's do, cosine >= 0.99 per layer.
"""

import pytest
import torch

from spikeforge.config import SpikeforgeConfig
from spikeforge.golden import model
from spikeforge.golden.float_reference import FloatReference

SEEDS = range(6)


def wide_config(reset: str, surrogate: str, timesteps: int = 8, layers=(32, 48, 10)) -> SpikeforgeConfig:
    beta_bits = 2  # beta = 0.75
    frac = (timesteps - 1) * beta_bits
    return SpikeforgeConfig(name="wide").replace(
        network={"layers": list(layers), "timesteps": timesteps},
        neuron={"threshold": 96 << frac, "beta": 0.75, "beta_bits": beta_bits, "reset": reset, "leak_rounding": "floor"},
        formats={"membrane_bits": 44, "membrane_frac_bits": frac, "error_bits": 36, "grad_bits": 48},
        surrogate={"kind": surrogate, "width": (256 << frac) if surrogate == "triangle" else (160 << frac),
                   "bits": 8 if surrogate == "triangle" else 1},
        training={"output_error_shift": 20, "error_shift": 0, "target_true": 6, "target_false": 1,
                  "loss": "count_mse", "batch_size": 8},
    )


def random_case(cfg: SpikeforgeConfig, seed: int):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randint(-60, 61, shape, generator=g, dtype=torch.int64) for shape in cfg.layer_shapes]
    T, B = cfg.network.timesteps, cfg.training.batch_size
    rate = 0.2 + 0.6 * torch.rand((), generator=g).item()
    inputs = (torch.rand(T, B, cfg.network.layers[0], generator=g) < rate).to(torch.int64)
    labels = torch.randint(0, cfg.network.layers[-1], (B,), generator=g)
    return weights, inputs, labels


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("seed", SEEDS)
def test_forward_equals_float_reference_exactly(reset, seed):
    cfg = wide_config(reset, "rect")
    weights, inputs, _ = random_case(cfg, seed)
    golden = model.forward(cfg, weights, inputs)
    with torch.no_grad():
        _, ref_layers = FloatReference(cfg, weights)(inputs)
    total_spikes = 0
    for l, (gl, rl) in enumerate(zip(golden.forward, ref_layers)):
        assert torch.equal(gl.spikes, rl["spikes"].to(torch.int64)), f"layer {l}: spikes differ"
        assert torch.equal(gl.membrane, rl["membrane"].to(torch.int64)), f"layer {l}: membranes differ"
        assert torch.equal(rl["membrane"], rl["membrane"].round()), "float reference left the integers"
        total_spikes += int(gl.spikes.sum())
    assert total_spikes > 0, "degenerate case: no spikes, the comparison would prove nothing"


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


@pytest.mark.parametrize("surrogate", ["rect", "triangle"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("seed", SEEDS)
def test_weight_gradients_match_autograd(surrogate, reset, seed):
    cfg = wide_config(reset, surrogate)
    weights, inputs, labels = random_case(cfg, seed)
    trace = model.backward(cfg, weights, model.forward(cfg, weights, inputs), labels)
    ref_grads = FloatReference(cfg, weights).gradients(inputs, labels)
    for l, (lb, rg) in enumerate(zip(trace.backward, ref_grads)):
        if rg.abs().sum() == 0:
            assert lb.grad.abs().sum() == 0, f"layer {l}: golden gradient where autograd has none"
            continue
        cos = _cosine(lb.grad, rg)
        assert cos >= 0.99, f"layer {l}: cosine {cos:.5f} < 0.99 (seed {seed}, {surrogate}, {reset})"
    assert any(rg.abs().sum() > 0 for rg in ref_grads), "degenerate case: zero loss gradient everywhere"


def test_gradient_cosine_report(capsys):
    """Print the per-layer cosine similarities the closing note quotes (also asserted above)."""
    rows = []
    for surrogate in ("rect", "triangle"):
        for reset in ("subtract", "zero"):
            cfg = wide_config(reset, surrogate)
            worst = [1.0] * len(cfg.layer_shapes)
            for seed in SEEDS:
                weights, inputs, labels = random_case(cfg, seed)
                trace = model.backward(cfg, weights, model.forward(cfg, weights, inputs), labels)
                for l, rg in enumerate(FloatReference(cfg, weights).gradients(inputs, labels)):
                    if rg.abs().sum():
                        worst[l] = min(worst[l], _cosine(trace.backward[l].grad, rg))
            rows.append((surrogate, reset, worst))
            assert min(worst) >= 0.99
    with capsys.disabled():
        for surrogate, reset, worst in rows:
            print(f"\n  gradient cosine (min over {len(SEEDS)} seeds) {surrogate:8s} {reset:8s} "
                  + " ".join(f"L{l}={c:.6f}" for l, c in enumerate(worst)), end="")

"""Partition invariance of the multi-core contract, in the golden model: a network with three
hidden layers trains to the same weights_sha256 on 1, 2, 4 and 8 cores as on the one-core model,
and the parts of the contract that make it so (wide partial error sums, LFSR jump) are needed."""

import pytest
import torch

from spikeforge.config import load_config
from spikeforge.golden import lfsr, model
from spikeforge.golden.multicore import MultiCoreGolden
from spikeforge.train import train

DEEP = [64, 48, 40, 32, 10]


def _deep(**sections):
    base = load_config("configs/digits.toml").replace(network={"layers": DEEP}, training={"epochs": 1})
    return base.replace(**sections) if sections else base


def _sha(cfg, backend=None, samples=96):
    return train(cfg, samples=samples, epochs=1, progress=False, backend=backend, eval_every_epoch=False).report["weights_sha256"]


VARIANTS = {
    "digits-arith": {},
    "zero-reset-rect-floor": {"neuron": {"reset": "zero"}, "surrogate": {"kind": "rect", "width": 1536, "bits": 1},
                              "training": {"update_rounding": "floor", "error_rounding": "floor", "epochs": 1}},
    "half-even-mse": {"training": {"update_rounding": "half_even", "error_rounding": "half_even", "loss": "count_mse",
                                   "lr_shift": 12, "epochs": 1}},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_three_hidden_layers_same_weights_on_1_2_4_8_cores(variant):
    cfg = _deep(**VARIANTS[variant])
    golden = _sha(cfg)
    start = model.init_weights(cfg)
    for cores in (1, 2, 4, 8):
        be = MultiCoreGolden(cfg, cores=cores)
        got = _sha(cfg, be)
        assert got == golden, f"{variant}: {cores} cores end with {got[:16]}, one-core golden {golden[:16]}"
        if cores > 1:
            assert be.traffic.spike_messages > 0 and be.traffic.error_messages > 0
    assert any(not torch.equal(a, b) for a, b in zip(start, be.weights)), "training changed no weight"


def test_rounding_each_cores_partial_sum_would_break_invariance(monkeypatch):
    """The contract rounds the *sum* of partial errors once; rounding per core is not the same."""
    cfg = _deep()
    golden = _sha(cfg)
    real_partial = model.error_partial

    def rounded_partial(c, w, d):  # a core that rounds and saturates its own share before sending
        return model.error_finish(c, real_partial(c, w, d)) << c.training.error_shift

    monkeypatch.setattr(model, "error_partial", rounded_partial)
    assert _sha(cfg, MultiCoreGolden(cfg, cores=4)) != golden


def test_each_core_must_start_its_draws_at_its_own_weights(monkeypatch):
    cfg = _deep()
    golden = _sha(cfg)
    monkeypatch.setattr(lfsr, "jump", lambda state, steps: state)  # every core draws from the stream's start
    assert _sha(cfg, MultiCoreGolden(cfg, cores=2)) != golden


def test_lfsr_jump_equals_single_steps():
    state = lfsr.seed_state(0x1234_5678)
    s = state
    for n in range(70):
        assert lfsr.jump(state, n) == s
        _, s = lfsr.step(s)
    with pytest.raises(ValueError):
        lfsr.jump(state, -1)


def test_gathered_weights_and_inference_match_one_core():
    cfg = _deep()
    w = model.init_weights(cfg, seed=7)
    be = MultiCoreGolden(cfg, cores=5, weights=w)
    assert all(torch.equal(a, b) for a, b in zip(be.weights, w))
    from spikeforge.golden import GoldenBackend

    px = torch.randint(0, 256, (6, 64))
    seeds = torch.arange(6) + 11
    assert torch.equal(be.infer(px, seeds), GoldenBackend(cfg, w).infer(px, seeds))

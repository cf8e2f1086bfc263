"""``spikeforge train --backend rtl`` ends with exactly the golden backend's weights (the issue's
acceptance run: digits, 64 samples, 1 epoch, seed 1), through the host protocol on Verilator."""

import pytest

from spikeforge.config import load_config
from spikeforge.sim.cosim_core import train_rtl
from spikeforge.train import train


@pytest.mark.parametrize("config", ["configs/digits.toml", "configs/digits-up5k.toml"])
def test_rtl_training_matches_golden_sha256(config):
    """digits-up5k: one lane and single-port (SPRAM) memories, the same numbers as digits."""
    cfg = load_config(config).replace(training={"seed": 1})
    rtl = train_rtl(cfg, dataset="digits", samples=64, epochs=1, progress=False)
    gold = train(cfg, backend_name="golden", dataset="digits", samples=64, epochs=1, progress=False).report
    assert rtl["backend"] == "rtl" and gold["backend"] == "golden"
    assert rtl["weights_sha256"] == gold["weights_sha256"], "RTL and golden training ended with different weights"
    for key in ("train_accuracy", "test_accuracy", "history", "samples", "test_samples"):
        assert rtl[key] == gold[key], key
    c = rtl["rtl"]["counters"]
    bs = cfg.training.batch_size
    assert (c["samples_trained"], c["updates"]) == (64, -(-64 // bs))
    assert c["samples_inferred"] == rtl["test_samples"] + 64  # the epoch's test evaluation, then train accuracy
    assert c["fp_busy"] <= c["fp_cycles"] and c["bp_busy"] <= c["bp_cycles"]
    # WG accumulates while BP still propagates (bp phase) and after it (wg phase)
    assert c["wg_busy"] <= c["bp_cycles"] + c["wg_cycles"]


@pytest.mark.slow
def test_deep_20core_network_on_one_core_rtl_matches_20_core_golden():
    """configs/deep-20core.toml (four LIF layers): the one-core RTL ends with the weights the
    20-core golden model gives (partition invariance carries it to any placement). About 5
    minutes with the Verilator build; `make train-rtl-deep`."""
    from spikeforge.golden.multicore import MultiCoreGolden

    cfg = load_config("configs/deep-20core.toml").replace(training={"seed": 1})
    rtl = train_rtl(cfg, dataset="digits", samples=64, epochs=1, progress=False)
    be = MultiCoreGolden(cfg)
    assert be.placement.n_cores == 20
    gold = train(cfg, backend=be, dataset="digits", samples=64, epochs=1, progress=False).report
    assert rtl["weights_sha256"] == gold["weights_sha256"]

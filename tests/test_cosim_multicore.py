"""The multi-core accelerator (rtl/multicore.py ``MultiCoreTop``) trains under cocotb + Verilator
in lockstep with the golden multi-core model (sim/tb/tb_multicore.py): every prediction and every
core's weights after every update are equal, and the weights end bit-identical to one-core
training, on the one-core RTL and the golden model alike (partition invariance on RTL)."""

from __future__ import annotations

import os
import re
import sys

import pytest

from spikeforge.config import load_config
from spikeforge.data import load_dataset
from spikeforge.golden import GoldenBackend, model
from spikeforge.rtl.multicore import default_placement
from spikeforge.sim.cosim_multicore import run_multicore
from spikeforge.sim.runner import BUILD_ROOT
from spikeforge.train import train_epoch, weights_sha256

SAMPLES = 24  # three batches of 8: three updates, each core's LFSR jumped three times


def small_cfg(cores: int):
    """Three hidden layers (64-32-32-32-10), the deep-20core arithmetic, 4 lanes, 6 timesteps, one
    sample in flight (the whole accelerator finishes a sample before the next: TRAIN to every core
    at once); the pipelined tests raise ``sample_buffers``."""
    return load_config("configs/deep-20core.toml").replace(
        name=f"mc-small-{cores}",
        network={"layers": [64, 32, 32, 32, 10], "timesteps": 6},
        training={"batch_size": 8, "target_true": 5, "target_false": 1, "seed": 1},
        hardware={"lanes": 4, "cores": cores, "core_neurons": 128, "core_synapses": 4096, "sample_buffers": 1,
                  "neuron_cost": ()},
    )


def one_core_golden_sha(cfg) -> str:
    data = load_dataset("digits", cfg.formats.pixel_bits, cfg.training.split_seed, SAMPLES)
    be = GoldenBackend(cfg)
    train_epoch(be, cfg, data.train_x, data.train_y, 0)
    return weights_sha256(be.weights, cfg.formats.weight_bits)


def _seed() -> int:
    return int(os.environ.get("SPIKEFORGE_SEED", "1"))


def _lockstep(cfg, request, seed, link_stalls=0, **extra):
    replay = f"SPIKEFORGE_SEED={seed} {os.path.relpath(sys.executable)} -m pytest '{request.node.nodeid}'"
    args = {"lockstep": {"samples": SAMPLES, "epochs": 1, "test_samples": 4}, "replay": replay, **extra}
    # a run directory per test: two tests on one build may run at once (pytest -n)
    run_dir = BUILD_ROOT / "runs" / f"mc-{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}-{seed}"
    return run_multicore(cfg, "lockstep", args, seed=seed, run_dir=run_dir, link_stalls=link_stalls)


PLACEMENTS = {  # what each core holds
    2: ["L1[0:32]", "L2[0:32] L3[0:32] L4[0:10]"],
    4: ["L1[0:16]", "L1[16:32] L2[0:4]", "L2[4:32] L3[0:8]", "L3[8:32] L4[0:10]"],
    8: ["L1[0:8]", "L1[8:16]", "L1[16:24]", "L1[24:32]", "L2[0:16]", "L2[16:32] L3[0:4]", "L3[4:24]", "L3[24:32] L4[0:10]"],
}


@pytest.mark.parametrize("cores, gap, stall", [(2, 0.0, 0.0), (4, 0.0, 0.0), (8, 0.3, 0.5)])
def test_multicore_rtl_trains_like_one_core(cores, gap, stall, request):
    """2 cores: the first layer on one, the other three layers on the other (a core holding
    several layers sends its first layer's partial sums and rounds its other layers' errors
    itself). 4 cores: one layer each. 8 cores: the layers on 3, 2, 2 and 1 cores with uneven
    slices, and random idle gaps and backpressure on every host port."""
    cfg = small_cfg(cores)
    placement = default_placement(cfg)
    assert [" ".join(map(str, h)) for h in placement.cores] == PLACEMENTS[cores]
    seed = _seed()
    res, out = _lockstep(cfg, request, seed, gap=gap, stall=stall)
    assert res.passed, res.report()
    assert out["samples_trained"] == SAMPLES and out["batches"] == 3 and out["test_samples_inferred"] == 4
    want = one_core_golden_sha(cfg)
    assert want != weights_sha256(model.init_weights(cfg), cfg.formats.weight_bits)  # training moved the weights
    assert out["weights_sha256"] == want, "multi-core RTL and one-core golden training ended with different weights"
    for k, c in enumerate(out["counters"]):
        assert c["samples_trained"] == SAMPLES and c["updates"] == 3, f"core {k}: {c}"


@pytest.mark.parametrize("cores, buffers, gap, stall, link_stalls", [(4, 4, 0.0, 0.0, 0), (8, 3, 0.3, 0.5, 50)])
def test_pipelined_multicore_rtl_trains_like_one_core(cores, buffers, gap, stall, link_stalls, request):
    """Samples pipeline through the cores (hardware.sample_buffers banks per core, each core's own
    command stream of forward and backward halves): the same predictions and weights as golden,
    ending with the one-core hash. The first batch's streams also carry commands the cores must
    refuse (tb_multicore ``probe_refusals``); the lockstep shows the refusals changed nothing.
    The 8-core run also stalls every link between a core and a network at random, half the
    cycles each way (``MultiCoreTop(link_stalls=50)``), and every host port."""
    cfg = small_cfg(cores).replace(name=f"mc-small-{cores}-b{buffers}", hardware={"sample_buffers": buffers})
    res, out = _lockstep(cfg, request, _seed(), link_stalls=link_stalls, gap=gap, stall=stall, probe_refusals=True)
    assert res.passed, res.report()
    assert out["samples_trained"] == SAMPLES and out["batches"] == 3
    assert out["refusals_checked"] >= 5 * cores  # four with nothing in flight + three in flight, per core
    assert out["weights_sha256"] == one_core_golden_sha(cfg)
    for k, c in enumerate(out["counters"]):
        assert c["samples_trained"] == SAMPLES and c["updates"] == 3, f"core {k}: {c}"


def test_lockstep_catches_a_wrong_update_stream(request):
    """The comparison can fail: if the host gave every core the stream's start instead of its
    jumped LFSR state, the first update already differs and the bench names the core."""
    cfg = small_cfg(4)
    res, out = _lockstep(cfg, request, _seed(), mutant="unjumped_lfsr")
    assert not res.passed
    log = res.report()
    assert "after update 0, core 1" in log and "replay:" in log, log


def test_multicore_rtl_equals_one_core_rtl(request):
    """The one-core RTL (Top) trained on the same samples ends with the same weights as the 4- and
    8-core runs above (both equal the one-core golden hash)."""
    from spikeforge.sim.cosim_core import train_rtl

    cfg = small_cfg(1)
    rtl = train_rtl(cfg, dataset="digits", samples=SAMPLES, epochs=1, progress=False)
    assert rtl["weights_sha256"] == one_core_golden_sha(cfg)


def _deep_20core(samples: int, request, cxx_opt: str | None):
    """configs/deep-20core.toml on its 20 cores, in lockstep with the 20-core golden model; the
    weights end equal to one-core golden training on the same samples."""
    cfg = load_config("configs/deep-20core.toml").replace(training={"seed": 1})
    placement = default_placement(cfg)
    assert placement.n_cores == 20 and [len(placement.cores_of_layer(l)) for l in range(4)] == [3, 8, 8, 1]
    seed = _seed()
    replay = f"SPIKEFORGE_SEED={seed} {os.path.relpath(sys.executable)} -m pytest '{request.node.nodeid}'"
    res, out = run_multicore(cfg, "lockstep", {"lockstep": {"samples": samples, "epochs": 1}, "replay": replay},
                             seed=seed, cxx_opt=cxx_opt, run_dir=BUILD_ROOT / "runs" / f"mc-deep20-{samples}-{seed}")
    assert res.passed, res.report()
    data = load_dataset("digits", cfg.formats.pixel_bits, cfg.training.split_seed, samples)
    be = GoldenBackend(cfg)
    train_epoch(be, cfg, data.train_x, data.train_y, 0)
    assert out["cores"] == 20 and out["samples_trained"] == len(data.train_x)
    assert out["weights_sha256"] == weights_sha256(be.weights, cfg.formats.weight_bits)
    return out


def test_deep_20core_short_run_on_20_cores(request):
    """The CI's short run: two samples and one update on all 20 cores (every core's FP, BP, WG
    and jumped-LFSR update, both networks). The C++ is compiled at -O1: the 20-core model is
    25 MB of Verilog, and -O2 takes about three times as long to build."""
    _deep_20core(2, request, cxx_opt="-O1")


@pytest.mark.slow
def test_deep_20core_64_samples_on_20_cores(request):
    """`make train-rtl-multicore`: 64 samples, two updates (about 30 minutes with the build)."""
    out = _deep_20core(64, request, cxx_opt=None)
    assert out["weights_sha256"].startswith("e35d793d530f0d42")  # = the one-core RTL (make train-rtl-deep)

"""Peer check: in wide formats the golden forward pass is snnTorch's ``Leaky``, spike for spike.

Mapping (docs/arithmetic.md, "Peers"): beta = beta_q / 2**beta_bits, threshold = threshold (in
membrane units, input current scaled by 2**membrane_frac_bits), reset_mechanism = "subtract" or
"zero", reset_delay = True (snnTorch's default: the reset lands on the next step, unleaked, which
is our order of operations), strict compare (snnTorch fires on mem > threshold, as we do).
"""

import pytest
import torch

snn = pytest.importorskip("snntorch", reason="snntorch is a dev dependency; `make test` installs it")

from spikeforge.golden import model  # noqa: E402
from tests.test_float_limit import random_case, wide_config  # noqa: E402


def snntorch_layer(cfg, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run snn.Leaky over T steps on the golden synaptic current; return (spikes, membranes)."""
    n = cfg.neuron
    lif = snn.Leaky(
        beta=n.beta_q / (1 << n.beta_bits),
        threshold=float(n.threshold),
        reset_mechanism=n.reset,
        reset_delay=True,
    )
    mem = lif.init_leaky()
    spikes, mems = [], []
    drive = current.to(torch.float64) * float(1 << cfg.formats.membrane_frac_bits)
    for t in range(current.shape[0]):
        spk, mem = lif(drive[t], mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("seed", range(8))
def test_golden_forward_matches_snntorch_leaky(reset, seed):
    cfg = wide_config(reset, "rect", timesteps=10, layers=(40, 64, 12))
    weights, inputs, _ = random_case(cfg, 100 + seed)
    golden = model.forward(cfg, weights, inputs)
    spikes = 0
    for l, gl in enumerate(golden.forward):
        spk, mem = snntorch_layer(cfg, gl.current)
        assert torch.equal(spk.to(torch.int64), gl.spikes), f"layer {l}: snnTorch spikes differ (seed {seed})"
        # snnTorch's returned mem is our pre-reset v[t] exactly (the reset lands on the next step)
        assert torch.equal(mem, gl.membrane.to(torch.float64)), f"layer {l}: membranes differ (seed {seed})"
        spikes += int(gl.spikes.sum())
    assert spikes > 0

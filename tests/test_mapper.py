"""The mapper: every neuron placed exactly once, balanced, capacity and bad input refused clearly."""

import pytest

from spikeforge.config import ConfigError, load_config
from spikeforge.mapper import MappingError, place, place_config


def _covered(p):
    for l, n in enumerate(p.layers[1:]):
        rows = [r for _, s in p.slices_of_layer(l) for r in range(s.lo, s.hi)]
        assert rows == list(range(n)), f"layer {l}: neurons not covered once, in order"


@pytest.mark.parametrize("layers", [(64, 48, 40, 32, 10), (64, 128, 10), (8, 3, 2), (100, 400, 400, 400, 10)])
@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 13, 20])
def test_every_neuron_once_and_cores_balanced(layers, cores):
    if cores > sum(layers[1:]):
        with pytest.raises(MappingError, match="only .* LIF neurons"):
            place(layers, cores, 4096, 1 << 20)
        return
    p = place(layers, cores, 4096, 1 << 20)
    assert p.n_cores == cores and all(p.cores), "every core holds at least one neuron"
    _covered(p)
    syn = [sum(s.synapses for s in held) for held in p.cores]
    # contiguous cuts at neuron boundaries: no core is more than one neuron's fan-in off the mean
    mean = sum(syn) / cores
    assert max(syn) - mean <= max(layers[:-1]) + 1e-9 or cores > sum(layers[1:]) // 2
    # slices of a core are in layer order and a core holds each layer at most once
    for held in p.cores:
        assert [s.layer for s in held] == sorted({s.layer for s in held})


def test_large_layer_split_by_neurons_small_layers_share():
    p = place((64, 256, 16, 10), 4, 4096, 1 << 20)
    assert p.cores_of_layer(0) == [0, 1, 2, 3][: len(p.cores_of_layer(0))] and len(p.cores_of_layer(0)) >= 3
    last = p.cores[-1]
    assert {s.layer for s in last} >= {1, 2}, f"the two small layers share the last core: {p.describe()}"


def test_capacity_errors_name_the_core_and_the_fix():
    with pytest.raises(MappingError, match=r"core 0 would hold .* synapses .* hardware.core_synapses = 1000; .* at least 10 cores"):
        place((64, 128, 10), 2, 4096, 1000)
    with pytest.raises(MappingError, match=r"core 0 would hold 74 neurons .* hardware.core_neurons = 50; this network needs at least 3 cores"):
        place((64, 128, 10), 2, 50, 1 << 20)
    with pytest.raises(MappingError, match="1 to 20 cores"):
        place((64, 128, 10), 21, 4096, 1 << 20)


def test_config_drives_the_placement_and_checks_capacity_fields():
    cfg = load_config("configs/digits.toml")
    p = place_config(cfg, cores=3)
    assert p.n_cores == 3 and "L1[0:" in p.describe()
    assert p.to_dict()["cores"][0]["synapses"] == sum(s.synapses for s in p.cores[0])
    with pytest.raises(ConfigError, match="hardware.core_neurons"):
        cfg.replace(hardware={"core_neurons": 0})
    with pytest.raises(ConfigError, match="hardware.core_synapses"):
        cfg.replace(hardware={"core_synapses": True})

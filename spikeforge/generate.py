"""``spikeforge generate``: Verilog of the configured core plus a summary a person can read.

The summary lists every memory of the core with its size in bits (what an FPGA flow will have to
map to block RAM), the lane count and the number formats, as JSON and as markdown.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from spikeforge.config import SpikeforgeConfig, to_toml
from spikeforge.rtl.bp_engine import accumulator_bits, group_bits
from spikeforge.rtl.params import CoreParams

__all__ = ["memory_map", "generate"]

TOP = "spikeforge_core"


def memory_map(cfg: SpikeforgeConfig) -> list[dict]:
    """Every memory of ``rtl/core.py`` for this config: name, words, bits per word, total bits."""
    P = cfg.hardware.lanes
    L = list(cfg.network.layers)
    T = cfg.network.timesteps
    f = cfg.formats
    groups = [-(-n // P) for n in L]
    max_in, max_out = max(L[:-1]), max(L[1:])
    max_groups = -(-max_out // P)
    rows = []

    def add(name, words, width, what):
        rows.append({"memory": name, "words": words, "bits_per_word": width, "bits": words * width, "holds": what})

    add("pixels", groups[0], P * f.pixel_bits, "pixel intensities of the current sample")
    for l in range(len(L) - 1):
        add(f"weights{l}", -(-L[l + 1] // P) * L[l], P * f.weight_bits, f"W of layer {l} ({L[l + 1]}x{L[l]}), P skewed banks")
        add(f"gradients{l}", groups[l + 1] * L[l], P * f.grad_bits, f"weight-gradient accumulators of layer {l}")
    add("spikes0", T * groups[0], P, "encoded input spikes, every timestep")
    for l in range(1, len(L)):
        add(f"spikes{l}", T * groups[l], P, f"output spikes of layer {l - 1}, every timestep (BP storage)")
        add(f"surrogates{l}", T * groups[l], P * cfg.surrogate.bits, f"surrogate of layer {l - 1}, every timestep (BP storage)")
    for l in range(len(L) - 2):
        add(f"errors{l}", T * groups[l + 1], P * f.error_bits, f"error into layer {l} from layer {l + 1}, every timestep")
    add("delta_buffer", max(groups[1:]), P * f.error_bits, "delta of the timestep in WG")
    add("membranes", T * groups[-1], P * f.membrane_bits, "output-layer membranes, every timestep (host trace)")
    add("fp_state", max_groups, P * (f.membrane_bits + 1), "membrane and last spike of the layer in FP")
    add("fp_accumulators", max_groups, P * f.input_acc_bits, "synaptic sums of the timestep in FP")
    p = CoreParams.from_config(cfg)
    gbits = group_bits(p)
    add("bp_deltas", max_groups, P * f.error_bits, "delta of the timestep in BP")
    add("bp_accumulators", -(-max_in // P), P * accumulator_bits(p), "W^T delta sums of the timestep in BP (exact width)")
    add("bp_nonzero", max_groups, gbits, "indices of the non-zero delta groups (BP walks only these)")
    for l in range(len(L) - 1):
        add(f"wg{l}_nonzero", max_groups, gbits + P * f.error_bits,
            f"non-zero delta groups with their deltas, WG engine of layer {l}")
    return rows


def generate(cfg: SpikeforgeConfig, out: str | Path, lint: bool = True) -> dict:
    """Write ``TOP`` (the core with its host interface, as simulated and synthesized) and the
    summary; with ``lint``, also run Verilator's lint and record every waived class with its
    reason and every unwaived warning."""
    from spikeforge.rtl.top import Top
    from spikeforge.sim.lint import lint_report
    from spikeforge.sim.verilog import write_verilog

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    vpath = write_verilog(Top(cfg), out, TOP)
    gen_s = time.perf_counter() - t0
    mems = memory_map(cfg)
    lint_result = lint_report(vpath, TOP) if lint else None
    summary = {
        "top": TOP,
        "verilog": str(vpath),
        "verilog_bytes": vpath.stat().st_size,
        "generate_seconds": round(gen_s, 2),
        "lanes": cfg.hardware.lanes,
        "layers": list(cfg.network.layers),
        "timesteps": cfg.network.timesteps,
        "formats": cfg.to_dict()["formats"],
        "memories": mems,
        "memory_bits_total": sum(r["bits"] for r in mems),
        "lint": lint_result,
        "config": cfg.to_dict(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "config.toml").write_text(to_toml(cfg))
    lines = [
        f"# spikeforge core `{cfg.name}`",
        "",
        f"- top module `{TOP}` in `{vpath.name}` ({summary['verilog_bytes']:,} bytes)",
        f"- layers {'-'.join(map(str, cfg.network.layers))}, T = {cfg.network.timesteps}, lanes P = {cfg.hardware.lanes}",
        "- formats: " + ", ".join(f"{k.replace('_bits', '')} {v} b" for k, v in summary["formats"].items()),
        "",
        "| memory | words | bits/word | bits | holds |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {r['memory']} | {r['words']} | {r['bits_per_word']} | {r['bits']:,} | {r['holds']} |" for r in mems]
    lines += ["", f"Total: {summary['memory_bits_total']:,} bits ({summary['memory_bits_total'] / 8192:.1f} KiB)", ""]
    if lint_result:
        verdict = "clean" if lint_result["clean"] else f"{len(lint_result['unwaived'])} UNWAIVED warnings"
        lines += [f"## Lint: `{lint_result['tool']}` -- {lint_result['warnings']:,} warnings, {verdict}", "",
                  "| code | count | why it is waived |", "|---|---:|---|"]
        lines += [f"| {w['code']} | {w['count']:,} | {w['reason']} |" for w in lint_result["waived"]]
        lines += [""] + [f"    {u}" for u in lint_result["unwaived"]] + [""]
    (out / "summary.md").write_text("\n".join(lines))
    return summary

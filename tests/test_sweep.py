"""The synth-all sweep's report writer: the table replaces its own section and nothing else,
failed points are shown as such, and the plot is written (no synthesis here; `make synth-all`)."""

from __future__ import annotations

from spikeforge.fpga.sweep import BEGIN, END, POINTS, plot, render_table, write_doc


def _row(series, x, fits=True, fmax=41.5, luts=12000):
    return {"series": series, "x": x, "target": "ecp5-25f", "config": f"c-{x}", "layers": [16, 8, 4],
            "timesteps": 4, "lanes": x, "fits": fits, "reason": None if fits else "LUT 30000 / 24288",
            "fmax_mhz": fmax if fits else None, "constraint_mhz": 100.0, "timing_met": False if fits else None,
            "luts": luts if fits else None, "ffs": 3000, "brams": 0, "dsps": 11, "seconds": 170.0,
            "verilog_sha256": "0" * 64}


def test_table_replaces_only_its_section(tmp_path):
    doc = tmp_path / "r.md"
    doc.write_text(f"# head\n\nkept above\n\n{BEGIN}\nold table\n{END}\n\nkept below\n")
    rows = [_row("lanes", 1), _row("lanes", 2, fits=False),
            {"series": "lanes", "x": 4, "target": "ecp5-85f", "config": "lanes=4", "error": "SynthError: boom"}]
    write_doc(doc, render_table(rows, {"yosys": "0.70"}, "abc123", "2026-11-25"))
    text = doc.read_text()
    assert "old table" not in text and "kept above" in text and "kept below" in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| lanes | 1 | ecp5-25f |" in text and "41.5 (missed)" in text
    assert "**no**: LUT 30000 / 24288" in text
    assert "error: SynthError: boom" in text
    assert "Commit abc123" in text and "2026-11-25" in text


def test_plot_is_written(tmp_path):
    png = tmp_path / "p.png"
    plot([_row("lanes", 1, luts=5000), _row("lanes", 2, luts=8000), _row("weight_bits", 4)], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_points_are_distinct_and_valid():
    labels = [p.label for p in POINTS]
    assert len(labels) == len(set(labels))
    for p in POINTS:
        cfg = p.cfg()  # every point is a valid config
        assert cfg.name.endswith(f"{p.series}{p.x}")

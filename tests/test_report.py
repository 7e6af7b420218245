"""The comparison report: tables from metrics files, SVG curves and confusion grids."""

from __future__ import annotations

import json
from pathlib import Path

from reprotune.reporting.report import build, metric_rows
from reprotune.reporting.svg import confusion_chart, line_chart


def test_metric_rows_list_scalars_then_per_type_f1() -> None:
    metrics = {"baseline": {"f1": 0.1, "per_type": {"PER": {"f1": 0.2}}},
               "full": {"f1": 0.8, "per_type": {"PER": {"f1": 0.9}}}, "lora": {"f1": 0.7}}
    assert metric_rows(metrics) == [("f1", [0.1, 0.8, 0.7]), ("f1 PER", [0.2, 0.9, None])]


def test_build_writes_markdown_and_pictures(tmp_path: Path) -> None:
    task = tmp_path / "metrics" / "t"
    (task / "confusion").mkdir(parents=True)
    for method, f1 in (("baseline", 0.05), ("full", 0.75), ("lora", 0.7)):
        (task / f"{method}.json").write_text(json.dumps({"f1": f1}))
        (task / f"{method}-cost.json").write_text(json.dumps({"total_params": 100, "trainable_params": 10,
                                                              "shipped_bytes": 2**20, "train_seconds": 3.0}))
    (task / "confusion" / "full.csv").write_text("actual,predicted\nPER,PER\nPER,LOC\n")
    curve = task / "train-full" / "plots" / "metrics"
    curve.mkdir(parents=True)
    (curve / "loss.tsv").write_text("timestamp\tstep\tloss\n0\t1\t2.0\n0\t2\t1.5\n")
    out = tmp_path / "out"
    out.mkdir()
    markdown = build({"t": "ner"}, tmp_path / "metrics", out)
    assert "| f1 | 0.0500 | 0.7500 | 0.7000 |" in markdown
    assert "| shipped size MB | 1.0 | 1.0 | 1.0 |" in markdown
    assert (out / "t-loss.svg").exists() and (out / "t-confusion-full.svg").exists()


def test_svg_charts_contain_their_data() -> None:
    assert "polyline" in line_chart({"full": [(1, 0.5), (2, 0.7)]}, "f1")
    grid = confusion_chart([("PER", "PER"), ("PER", "LOC")], "t")
    assert ">PER<" in grid and ">LOC<" in grid and grid.count("<rect") == 5

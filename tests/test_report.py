"""The comparison report: tables from metrics files, SVG curves and confusion grids."""

from __future__ import annotations

import json
from pathlib import Path

from reprotune.reporting import charts
from reprotune.reporting.report import build, metric_rows, read_curve


def test_metric_rows_list_scalars_then_per_type_f1() -> None:
    metrics = {
        "baseline": {"f1": 0.1, "per_type": {"PER": {"f1": 0.2}}},
        "full": {"f1": 0.8, "per_type": {"PER": {"f1": 0.9}}},
        "lora": {"f1": 0.7},
    }
    assert metric_rows(metrics) == [("f1", [0.1, 0.8, 0.7]), ("f1 PER", [0.2, 0.9, None])]


def test_build_writes_markdown_and_pictures(tmp_path: Path) -> None:
    task = tmp_path / "metrics" / "t"
    (task / "confusion").mkdir(parents=True)
    for method, f1 in (("baseline", 0.05), ("full", 0.75), ("lora", 0.7)):
        (task / f"{method}.json").write_text(json.dumps({"f1": f1}))
        (task / f"{method}-cost.json").write_text(
            json.dumps({"total_params": 100, "trainable_params": 10, "shipped_bytes": 2**20, "train_seconds": 3.0})
        )
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


def test_confusion_chart_names_classes_and_counts() -> None:
    figure = charts.confusion_figure([("PER", "PER"), ("PER", "LOC"), ("PER", "PER")], "t")
    assert figure is not None
    svg = charts.to_svg(figure)
    assert ">PER<" in svg and ">LOC<" in svg and ">2<" in svg and "predicted class" in svg


def write_dvclive(plots: Path) -> None:
    """dvclive's layout as HF's callback writes it: `step` is the log index, epoch.tsv maps it."""
    (plots / "eval").mkdir(parents=True)
    (plots / "epoch.tsv").write_text("step\tepoch\n0\t0.5\n1\t1.0\n2\t1.5\n3\t2.0\n4\t2.0\n")
    (plots / "eval" / "f1.tsv").write_text("step\tf1\n1\t0.25\n3\t0.5\n")
    (plots / "loss.tsv").write_text("step\tloss\n0\t2.0\n2\t1.0\n")


def test_curves_sit_at_the_logged_epochs_not_dvclive_indexes(tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    write_dvclive(plots)
    assert read_curve(plots, "eval/f1.tsv") == ([(1.0, 0.25), (2.0, 0.5)], "epoch")
    assert read_curve(plots, "loss.tsv") == ([(0.5, 2.0), (1.5, 1.0)], "epoch")
    (plots / "epoch.tsv").unlink()
    assert read_curve(plots, "eval/f1.tsv") == ([(1.0, 0.25), (3.0, 0.5)], "dvclive log index")


def test_curve_chart_draws_both_methods_at_their_x_values_with_a_legend() -> None:
    figure = charts.curve_figure(
        {"full": [(1.0, 0.2), (2.0, 0.4)], "lora": [(1.0, 0.3), (2.0, 0.5)]}, "t", "epoch", "f1"
    )
    assert figure is not None
    axes = figure.axes[0]
    assert [list(line.get_xdata()) for line in axes.lines] == [[1.0, 2.0], [1.0, 2.0]]
    assert axes.get_xlabel() == "epoch" and axes.get_ylabel() == "f1"
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["full fine-tuning", "LoRA"]


def test_report_curve_svg_is_drawn_at_epochs(tmp_path: Path) -> None:
    for method in ("full", "lora"):
        write_dvclive(tmp_path / "metrics" / "t" / f"train-{method}" / "plots" / "metrics")
    out = tmp_path / "out"
    out.mkdir()
    build({"t": "ner"}, tmp_path / "metrics", out)
    svg = (out / "t-eval-f1.svg").read_text()
    assert ">epoch<" in svg and ">validation f1<" not in svg and "t: validation f1" in svg
    assert "log index" not in svg


def test_differences_chart_has_zero_margin_and_interval() -> None:
    significance = {
        "lora_minus_full.f1.difference": 0.02,
        "lora_minus_full.f1.ci_low": -0.01,
        "lora_minus_full.f1.ci_high": 0.05,
        "lora_minus_full.f1.margin": 0.01,
        "level": 0.9,
    }
    figure = charts.differences_figure(significance, "t")
    assert figure is not None
    axes = figure.axes[0]
    xs = sorted({float(x) for line in axes.lines for x in line.get_xdata()})
    assert {-0.01, 0.0, 0.01} <= set(xs)  # the margin on both sides and zero
    caps = [float(x) for line in axes.lines if line.get_marker() not in (None, "None", "") for x in line.get_xdata()]
    for end in (-0.01, 0.05, 0.02):  # the interval's ends and the point
        assert any(abs(x - end) < 1e-9 for x in caps)
    assert "90% interval" in axes.get_xlabel()
    assert charts.differences_figure({}, "t") is None


def test_trials_chart_marks_the_chosen_trial() -> None:
    rows = [
        {"trial": 0, "value": 0.4, "state": "complete", "chosen": False},
        {"trial": 1, "value": 0.6, "state": "complete", "chosen": True},
        {"trial": 2, "value": 0.1, "state": "pruned", "chosen": False},
    ]
    figure = charts.trials_figure({"lora": rows}, "f1", "t")
    assert figure is not None
    stars = [line for line in figure.axes[0].lines if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [1] and list(stars[0].get_ydata()) == [0.6]
    assert figure.axes[0].get_ylabel() == "validation f1"


def test_search_trials_and_differences_reach_the_report(tmp_path: Path) -> None:
    write_task(tmp_path, intervals=False, significance=SIGNIFICANCE)
    search = tmp_path / "metrics" / "t" / "search-lora"
    search.mkdir()
    (search / "trials.json").write_text(json.dumps([{"trial": 0, "value": 0.5, "state": "complete", "chosen": True}]))
    (tmp_path / "metrics" / "t" / "search-lora.json").write_text(json.dumps({"enabled": True, "metric": "f1"}))
    out = tmp_path / "out"
    out.mkdir()
    markdown = build({"t": "ner"}, tmp_path / "metrics", out)
    assert "![t-lora-minus-full.svg](t-lora-minus-full.svg)" in markdown
    assert "validation f1" in (out / "t-search-trials.svg").read_text()


def test_charts_are_byte_identical_across_runs(tmp_path: Path) -> None:
    for method in ("full", "lora"):
        write_dvclive(tmp_path / "metrics" / "t" / f"train-{method}" / "plots" / "metrics")
    (tmp_path / "metrics" / "t" / "confusion").mkdir()
    (tmp_path / "metrics" / "t" / "confusion" / "full.csv").write_text("actual,predicted\nPER,PER\nPER,LOC\n")
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        build({"t": "ner"}, tmp_path / "metrics", out)
        outputs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outputs[0] == outputs[1] and len(outputs[0]) >= 4
    assert all(b"Date" not in data and str(tmp_path).encode() not in data for data in outputs[0].values())


def write_task(root: Path, intervals: bool, significance: dict | None) -> None:
    task = root / "metrics" / "t"
    task.mkdir(parents=True)
    for method, f1 in (("baseline", 0.05), ("full", 0.389), ("lora", 0.407)):
        values = {"f1": f1, "sentences": 360}
        if intervals:
            values |= {"f1_ci_low": f1 - 0.045, "f1_ci_high": f1 + 0.044}
        (task / f"{method}.json").write_text(json.dumps(values))
    if significance is not None:
        (task / "significance.json").write_text(json.dumps(significance))


SIGNIFICANCE = {
    "lora_minus_full.f1.difference": 0.018,
    "lora_minus_full.f1.ci_low": -0.012,
    "lora_minus_full.f1.ci_high": 0.047,
    "lora_minus_full.f1.p_value": 0.23,
    "lora_minus_full.f1.significant": 0,
    "lora_minus_full.f1.test": "paired bootstrap",
    "full_minus_baseline.f1.difference": 0.339,
    "full_minus_baseline.f1.ci_low": 0.29,
    "full_minus_baseline.f1.ci_high": 0.39,
    "full_minus_baseline.f1.p_value": 0.0009,
    "full_minus_baseline.f1.significant": 1,
    "full_minus_baseline.f1.test": "paired bootstrap",
    "level": 0.95,
    "resamples": 1000,
    "examples": 360,
}


def test_headline_numbers_show_their_interval_and_no_interval_rows(tmp_path: Path) -> None:
    write_task(tmp_path, intervals=True, significance=None)
    out = tmp_path / "out"
    out.mkdir()
    markdown = build({"t": "ner"}, tmp_path / "metrics", out)
    assert "| f1 | 0.050 [0.005, 0.094] | 0.389 [0.344, 0.433] | 0.407 [0.362, 0.451] |" in markdown
    assert "| sentences | 360 | 360 | 360 |" in markdown
    assert "| f1_ci_low" not in markdown and "| f1_ci_high" not in markdown
    assert "**How to read this.**" in markdown


def test_lora_against_full_paragraph_from_significance_json(tmp_path: Path) -> None:
    write_task(tmp_path, intervals=True, significance=SIGNIFICANCE)
    out = tmp_path / "out"
    out.mkdir()
    markdown = build({"t": "ner"}, tmp_path / "metrics", out)
    assert "**LoRA against full**, paired on the same 360 test examples:" in markdown
    assert (
        "- f1: LoRA \u2212 full = +0.018 [\u22120.012, +0.047], p = 0.23: not significant at 95% (paired bootstrap)"
    ) in markdown
    assert "- f1: full \u2212 baseline = +0.339 [+0.290, +0.390], p < 0.001: significant at 95%" in markdown
    assert markdown.index("LoRA against full") < markdown.index("full against the baseline")


def test_report_words_the_verdict_as_the_uncertainty_module_does() -> None:
    from reprotune.evaluation.uncertainty import PairedResult, verdict
    from reprotune.reporting.report import verdict_text

    cases = (
        (0.018, -0.012, 0.047, 0.23, False),
        (-0.1, -0.2, -0.01, 0.031, True),
        (0.0, 0.0, 0.0, 1.0, False),
        (0.2, 0.1, 0.3, 0.0004, True),
    )
    for difference, low, high, p, significant in cases:
        result = PairedResult(
            "f1",
            0.4,
            0.4 + difference,
            difference,
            low,
            high,
            p,
            "paired bootstrap",
            significant,
            0.95,
            1000,
            360,
            "full",
            "LoRA",
        )
        flat = {
            f"lora_minus_full.f1.{k}": v
            for k, v in (
                ("difference", difference),
                ("ci_low", low),
                ("ci_high", high),
                ("p_value", p),
                ("significant", int(significant)),
            )
        } | {"level": 0.95}
        assert verdict_text(flat, "lora_minus_full", "f1", ("LoRA", "full")) == verdict(result)


def test_metrics_without_intervals_read_as_before(tmp_path: Path) -> None:
    write_task(tmp_path, intervals=False, significance=None)
    out = tmp_path / "out"
    out.mkdir()
    markdown = build({"t": "ner"}, tmp_path / "metrics", out)
    assert "| f1 | 0.0500 | 0.3890 | 0.4070 |" in markdown
    assert "How to read this" not in markdown and "against full" not in markdown


# ----------------------------------------------------------------------------- the one-sentence verdict


def margin_keys(verdict: str, low: float, high: float, **extra: float) -> dict:
    keys = {"ci_low": low, "ci_high": high, "difference": (low + high) / 2, "margin": 0.01, "verdict": verdict}
    keys |= {"detectable": 0.041, "p_value": 0.3, "significant": 0} | extra
    return {f"lora_minus_full.f1.{key}": value for key, value in keys.items()} | {
        "level": 0.95,
        "examples": 377,
        "verdict_metric": "f1",
    }


COSTS = {
    "full": {"trainable_params": 22_573_461, "shipped_bytes": 91_020_185},
    "lora": {"trainable_params": 144_405, "shipped_bytes": 596_546},
}


def test_each_verdict_reads_as_one_sentence_in_points() -> None:
    from reprotune.reporting.report import verdict_sentence

    def sentence(verdict: str, low: float, high: float, **extra: float) -> str | None:
        return verdict_sentence(margin_keys(verdict, low, high, **extra), "lora_minus_full.f1.", "f1", COSTS)

    assert sentence("good enough", -0.008, 0.03) == (
        "LoRA is good enough here: at worst 0.8 F1 points below full (95% bound), "
        "with 0.64% of the trainable parameters and 1/153 of the shipped size."
    )
    assert sentence("worse", -0.06, -0.031) == "LoRA is worse: by 3.1 to 6.0 F1 points (95% interval)."
    assert sentence("too small to tell", -0.018, 0.059, examples_needed=9437) == (
        "The test set is too small to tell within 1 F1 point: it would take about 9,400 test examples (it has 377)."
    )
    assert sentence("better", 0.008, 0.036).startswith("LoRA is better here: by 0.8 to 3.6 F1 points")
    assert sentence("equivalent", -0.004, 0.006).startswith(
        "LoRA is as good as full here: within ±1 F1 point (95% interval \u22120.4 to +0.6 F1 points)"
    )
    assert verdict_sentence({}, "lora_minus_full.f1.", "f1", COSTS) is None


def test_a_task_section_opens_with_the_verdict_and_the_one_seed_caveat(tmp_path: Path) -> None:
    write_task(tmp_path, intervals=True, significance=SIGNIFICANCE | margin_keys("too small to tell", -0.012, 0.047))
    out = tmp_path / "out"
    out.mkdir()
    markdown = build({"t": "ner"}, tmp_path / "metrics", out)
    section = markdown[markdown.index("## t (ner)") :]
    assert section.startswith("## t (ner)\n\n**The test set is too small to tell within 1 F1 point")
    assert "more training seeds would be needed" in section  # no examples_needed key
    assert "the smallest difference these 377 test examples could detect: 4.1 F1 points (80% power)" in section
    assert "One training seed per method: the intervals cover the test sample, not another training run" in section
    assert "`reprotune-seeds run t --seeds 43 44`" in section
    assert section.index("One training seed") < section.index("| | baseline | full | LoRA |")


def test_with_two_seeds_or_more_the_verdict_is_the_seed_test(tmp_path: Path) -> None:
    write_task(tmp_path, intervals=True, significance=SIGNIFICANCE | margin_keys("too small to tell", -0.012, 0.047))
    seeds = {"seeds": 3, "seed_values": [42, 43, 44], "verdict_metric": "f1"}
    seeds |= {f"seeds.{key}": value for key, value in margin_keys("worse", -0.06, -0.031).items()}
    seeds |= {"full.f1.mean": 0.39, "full.f1.sd": 0.01, "lora.f1.mean": 0.35, "lora.f1.sd": 0.02}
    seeds |= {"verdicts": {"f1": "LoRA − full = −0.045 [−0.060, −0.031], p = 0.004: significant at 95%"}}
    (tmp_path / "metrics" / "t" / "seeds.json").write_text(json.dumps(seeds))
    out = tmp_path / "out"
    out.mkdir()
    markdown = build({"t": "ner"}, tmp_path / "metrics", out)
    assert "**Across 3 training seeds: LoRA is worse: by 3.1 to 6.0 F1 points (95% interval).**" in markdown
    assert "One training seed per method" not in markdown
    assert "- across seeds, f1: LoRA − full = −0.045" in markdown

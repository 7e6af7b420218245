"""The evaluate stage's intervals and the error-analysis stage's paired tests, on hand-made predictions."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from e2e import run

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import BootstrapParams, ErrorAnalysisParams, EvaluateParams, SignificanceParams
from reprotune.evaluation import paired as stage
from reprotune.evaluation.evaluate import with_intervals
from reprotune.evaluation.uncertainty import bootstrap_intervals, significance_metrics
from reprotune.tasks.classification import metrics as classification
from reprotune.tasks.classification.params import ClassificationMeta
from reprotune.tasks.ner import metrics as ner
from reprotune.tasks.ner.params import NerMeta
from stages import error_analysis as error_analysis_stage

NER_META = NerMeta(labels=["O", "B-PER", "I-PER"], types_missing_from_train=[])
CLS_META = ClassificationMeta(labels=["neg", "pos"], labels_missing_from_train=[], text_fields=["text"], pair=False)


def task(type_name: str, resamples: int = 500, **significance) -> SimpleNamespace:
    return SimpleNamespace(
        type=type_name,
        evaluate=EvaluateParams(bootstrap=BootstrapParams(resamples=resamples, seed=0)),
        error_analysis=ErrorAnalysisParams(
            significance=SignificanceParams(resamples=max(resamples, 1), **significance)
        ),
    )


def ner_frame(found: np.ndarray) -> pd.DataFrame:
    """Sentences 'Ann met Bob': one PER entity each, predicted where `found` is true."""
    gold = [["B-PER", "O", "O"]] * len(found)
    pred = [["B-PER", "O", "O"] if hit else ["O", "O", "O"] for hit in found]
    return pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(len(found))],
            "tokens": [["Ann", "met", "Bob"]] * len(found),
            "gold": gold,
            "pred": pred,
        }
    )


def hits(n: int, rate: float, seed: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[: round(rate * n)] = True
    return np.random.default_rng(seed).permutation(out)


# ----------------------------------------------------------------------------- evaluate: intervals


def test_evaluate_adds_an_interval_for_every_headline_key_and_keeps_the_rest():
    predictions = ner_frame(hits(120, 0.5, 0))
    scores = ner.score(predictions, NER_META, None)
    out = with_intervals(scores, predictions, NER_META, task("ner"))
    assert {k: out[k] for k in scores} == scores and list(out)[: len(scores)] == list(scores)
    assert set(out) - set(scores) == {f"{k}_ci_{s}" for k in ner.HEADLINE_KEYS for s in ("low", "high")}
    for key in ner.HEADLINE_KEYS:
        assert out[f"{key}_ci_low"] <= scores[key] <= out[f"{key}_ci_high"]
    expected = bootstrap_intervals(ner.example_stats(predictions, NER_META), ner.HEADLINE, 500, 0)["f1"]
    assert (out["f1_ci_low"], out["f1_ci_high"]) == pytest.approx(expected, abs=1e-6)
    assert with_intervals(scores, predictions, NER_META, task("ner")) == out  # seeded
    assert with_intervals(scores, predictions, NER_META, task("ner", resamples=0)) == scores


def test_evaluate_intervals_for_classification():
    gold = ["pos", "neg"] * 50
    right = hits(100, 0.8, 1)
    pred = [g if r else ("neg" if g == "pos" else "pos") for g, r in zip(gold, right)]
    predictions = pd.DataFrame({"id": [str(i) for i in range(100)], "gold": gold, "pred": pred})
    out = with_intervals(
        classification.score(predictions, CLS_META, None), predictions, CLS_META, task("classification")
    )
    assert out["accuracy"] == 0.8 and out["accuracy_ci_low"] < 0.8 < out["accuracy_ci_high"]
    assert {"macro_f1_ci_low", "mcc_ci_high"} <= set(out) and "per_class" in out
    json.dumps(out)


# ----------------------------------------------------------------------------- error-analysis: paired tests


def test_identical_predictions_are_not_significantly_different():
    same = ner_frame(hits(80, 0.6, 2))
    results = stage.significance(
        {"baseline": ner_frame(hits(80, 0.1, 3)), "full": same, "lora": same.copy()}, NER_META, task("ner")
    )
    assert list(results) == ["lora_minus_full", "full_minus_baseline", "lora_minus_baseline"]
    for metric in ner.HEADLINE_KEYS:
        result = results["lora_minus_full"][metric]
        assert result.difference == 0 and (result.ci_low, result.ci_high) == (0, 0)
        assert result.p_value == 1.0 and not result.significant
    assert results["full_minus_baseline"]["f1"].significant
    flat = significance_metrics(results)
    assert flat["lora_minus_full.f1.difference"] == 0 and flat["lora_minus_full.f1.significant"] == 0
    assert flat["full_minus_baseline.recall.significant"] == 1 and flat["level"] == 0.95
    assert flat["examples"] == 80 and flat["lora_minus_full.f1.test"] == "paired bootstrap"
    assert all("." not in k or k.count(".") == 2 for k in flat)  # dvc metrics diff shows each key as is
    json.dumps(flat)


@pytest.mark.parametrize("test", ["bootstrap", "randomisation"])
def test_a_clear_improvement_is_significant_and_worded(test):
    full, lora = ner_frame(hits(100, 0.4, 4)), ner_frame(hits(100, 0.9, 5))
    results = stage.significance({"baseline": full, "full": full, "lora": lora}, NER_META, task("ner", test=test))
    f1 = results["lora_minus_full"]["f1"]
    assert f1.difference > 0.2 and f1.ci_low > 0 and f1.significant and f1.p_value < 0.01
    lines = stage.significance_lines(results)
    assert "**LoRA against full**" in lines
    assert any(
        line.startswith("- f1: LoRA \u2212 full = +") and line.endswith(f": significant at 95% ({f1.test})")
        for line in lines
    )
    summary = stage.with_section("# NER error analysis\n\nErrors per kind:\n", lines)
    assert summary.startswith("# NER error analysis\n\n## Are the differences significant?")
    assert summary.endswith("Errors per kind:\n")


def test_classification_accuracy_is_decided_by_the_bootstrap_with_mcnemar_beside_it():
    gold = ["pos", "neg"] * 40

    def frame(rate: float, seed: int) -> pd.DataFrame:
        right = hits(80, rate, seed)
        pred = [g if r else ("neg" if g == "pos" else "pos") for g, r in zip(gold, right)]
        return pd.DataFrame({"id": [str(i) for i in range(80)], "gold": gold, "pred": pred})

    results = stage.significance(
        {"baseline": frame(0.5, 6), "full": frame(0.7, 7), "lora": frame(0.7, 7)}, CLS_META, task("classification")
    )
    accuracy = results["lora_minus_full"]["accuracy"]
    assert accuracy.test == "paired bootstrap" and accuracy.p_value == 1.0 and accuracy.mcnemar_p_value == 1.0
    flat = significance_metrics(results)
    assert flat["lora_minus_full.accuracy.mcnemar_p_value"] == 1.0 and "lora_minus_full.mcc.mcnemar_p_value" not in flat
    assert results["lora_minus_full"]["mcc"].test == "paired bootstrap"
    assert set(results["full_minus_baseline"]) == set(classification.HEADLINE_KEYS)


def test_rows_are_paired_by_example_id():
    full, lora = ner_frame(hits(50, 0.5, 8)), ner_frame(hits(50, 0.5, 8))
    shuffled = lora.sample(frac=1.0, random_state=0)
    results = stage.significance({"full": full, "lora": shuffled}, NER_META, task("ner"))
    assert results["lora_minus_full"]["f1"].ci_low == 0 == results["lora_minus_full"]["f1"].ci_high
    with pytest.raises(ReprotuneError, match="different test examples"):
        stage.significance({"full": full, "lora": lora.assign(id=[f"x{i}" for i in range(50)])}, NER_META, task("ner"))


def test_masked_lm_blocks_are_paired_by_block():
    from reprotune.tasks.mlm.params import MaskSettings, MlmMeta

    meta = MlmMeta(masking=MaskSettings(strategy="token", probability=0.15), chunk_size=8)
    blocks = np.repeat(np.arange(40), 3)
    rng = np.random.default_rng(9)

    def frame(loss: float) -> pd.DataFrame:
        right = rng.random(len(blocks)) < 0.5
        return pd.DataFrame(
            {
                "block": blocks,
                "position": np.tile([1, 4, 6], 40),
                "loss": loss + rng.random(len(blocks)),
                "correct": right,
                "in_top_k": right,
            }
        )

    results = stage.significance({"baseline": frame(5.0), "full": frame(2.0), "lora": frame(2.0)}, meta, task("mlm"))
    assert results["full_minus_baseline"]["perplexity"].difference < 0
    assert results["full_minus_baseline"]["perplexity"].significant
    assert results["lora_minus_full"]["perplexity"].n_examples == 40


def test_the_stage_writes_significance_json_and_the_verdicts_into_summary_md(tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    section = {
        "type": "ner",
        "model": {"name_or_path": "m"},
        "download": {"source": "conll", "path": "x"},
        "tokenize": {},
        "train_full": {},
        "train_lora": {},
        "evaluate": {},
        "error_analysis": {"worst_n": 2, "significance": {"resamples": 200, "seed": 1}},
    }
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"pipeline": {"tasks": {"t": "ner"}}, "tasks": {"t": section}})
    )
    (tmp_path / "data" / "t" / "tokenized").mkdir(parents=True)
    (tmp_path / "data" / "t" / "tokenized" / "meta.json").write_text(json.dumps(NER_META.model_dump()))
    (tmp_path / "data" / "t" / "predictions").mkdir()
    for method, rate, seed in (("baseline", 0.1, 1), ("full", 0.5, 2), ("lora", 0.5, 2)):
        ner_frame(hits(40, rate, seed)).to_parquet(tmp_path / "data" / "t" / "predictions" / f"{method}.parquet")

    error_analysis_stage.main(["t"])

    flat = json.loads((tmp_path / "metrics" / "t" / "significance.json").read_text())
    assert flat["lora_minus_full.f1.difference"] == 0 and flat["lora_minus_full.f1.significant"] == 0
    assert flat["full_minus_baseline.f1.significant"] == 1 and flat["resamples"] == 200
    summary = (tmp_path / "reports" / "t" / "summary.md").read_text()
    assert summary.startswith("# NER error analysis\n\n## Are the differences significant?")
    assert "- f1: LoRA \u2212 full = +0.000 [+0.000, +0.000], p = 1.00: not significant at 95%" in summary
    assert "Errors per kind" in summary and (tmp_path / "metrics" / "t" / "error_summary.json").exists()
    # identical predictions: equivalent at the default margin of 1 point, and every margin key is there
    assert flat["verdict_metric"] == "f1" and flat["lora_minus_full.f1.margin"] == 0.01
    assert flat["lora_minus_full.f1.verdict"] == "equivalent" and flat["lora_minus_full.f1.equivalent"] == 1
    assert flat["lora_minus_full.f1.noninferior"] == 1 and "full_minus_baseline.f1.margin" not in flat
    assert "## Is LoRA good enough?" in summary and "- f1 (margin 0.01): **equivalent**" in summary


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"margins": {"accuracy": 0.02}}, "'error_analysis.margins' names 'accuracy', not a headline metric of ner"),
        ({"verdict_metric": "f2"}, "'error_analysis.verdict_metric' is 'f2', not a headline metric of ner"),
    ],
)
def test_a_margin_for_a_metric_the_family_lacks_is_one_error_line(settings, message):
    frame = ner_frame(hits(20, 0.5, 1))
    bad = SimpleNamespace(type="ner", error_analysis=ErrorAnalysisParams(**settings))
    with pytest.raises(ReprotuneError, match=message.replace("(", r"\(")) as caught:
        stage.significance({"full": frame, "lora": frame}, NER_META, bad)
    assert "allowed: f1, precision, recall" in str(caught.value)


def test_margins_per_metric_replace_the_default():
    settings = ErrorAnalysisParams(margin=0.02, margins={"recall": 0.5})
    task = SimpleNamespace(type="ner", error_analysis=settings)
    assert stage.margins(task, ner.HEADLINE_KEYS) == {"f1": 0.02, "precision": 0.02, "recall": 0.5}


def test_two_training_seeds_give_mean_sd_and_a_test_across_seeds(
    scratch_reproduced: tuple[Path, dict], tmp_path: Path
) -> None:
    """reprotune-seeds on the one-task scratch project (tests/scratch.py, task `t`)."""
    repo = Path(shutil.copytree(scratch_reproduced[0], tmp_path / "repo", symlinks=True))
    seeds = str(Path(sys.executable).parent / "reprotune-seeds")
    run(repo, seeds, "run", "t", "--seeds", "7")
    out = run(repo, seeds, "report", "t").stdout
    assert "reports/seeds/t.md" in out
    summary = json.loads((repo / "metrics" / "t" / "seeds.json").read_text())
    assert summary["seeds"] == 2 and summary["seed_values"] == [7, 42]
    assert len(summary["full.f1.per_seed"]) == 2 and summary["full.f1.sd"] >= 0
    workspace = json.loads((repo / "metrics" / "t" / "full.json").read_text())
    assert workspace["f1"] == pytest.approx(summary["full.f1.per_seed"][1], abs=1e-6), "seed 42 is the workspace"
    assert summary["seeds.lora_minus_full.f1.test"] == "seed t-test with test-example variance"
    per_seed = [lora - full for full, lora in zip(summary["full.f1.per_seed"], summary["lora.f1.per_seed"])]
    assert summary["seeds.lora_minus_full.f1.difference"] == pytest.approx(sum(per_seed) / 2, abs=1e-6)
    assert summary["seeds.lora_minus_full.f1.verdict"] in (
        "better",
        "equivalent",
        "good enough",
        "worse",
        "too small to tell",
    )
    page = (repo / "reports" / "seeds" / "t.md").read_text()
    assert "± " in page and "LoRA − full" in page and "Across 2 training seeds: " in page
    run(repo, "dvc", "repro", "compare")
    comparison = (repo / "reports" / "comparison" / "comparison.md").read_text()
    assert "**Across 2 training seeds: " in comparison and "One training seed per method" not in comparison


# ----------------------------------------------------------------------------- duplicates in the test split


def copied_ner(found: np.ndarray, copies: int) -> tuple[pd.DataFrame, list[int]]:
    """`ner_frame(found)` followed by `copies` extra copies of each of its first sentences (as a
    test split holding one text several times), and each row's cluster from clusters.json."""
    frame = ner_frame(found)
    repeated = [i for i in range(len(found) // 2) for _ in range(copies)]
    rows = [*range(len(found)), *repeated]
    out = frame.iloc[rows].reset_index(drop=True).assign(id=[f"s{i}" for i in range(len(rows))])
    return out, rows


def test_cluster_ids_follow_the_predictions_by_id_and_skip_block_statistics():
    from reprotune.evaluation.clusters import TestClusters

    clusters = TestClusters(ids=("a", "b", "c", "d"), labels=(0, 1, 0, 3), source="data/t/raw/clusters.json")
    table = pd.DataFrame({"id": ["a", "b", "c", "d"]})
    assert clusters.for_table(table, 4).tolist() == [0, 1, 0, 3] and clusters.count == 3
    assert clusters.for_table(table.iloc[[3, 0, 2]], 3).tolist() == [3, 0, 0]
    assert clusters.for_table(pd.DataFrame({"block": [0, 1]}), 2) is None, "masked-LM: blocks, not raw rows"
    assert clusters.for_table(table, 2) is None, "statistics that are not one row per prediction"
    with pytest.raises(ReprotuneError, match="test id 'z' that the test split behind data/t/raw/clusters.json lacks"):
        clusters.for_table(pd.DataFrame({"id": ["a", "z"]}), 2)
    twice = TestClusters(ids=("a", "a"), labels=(0, 0), source="data/t/raw/clusters.json")
    with pytest.raises(ReprotuneError, match="has the id 'a' twice"):
        twice.for_table(pd.DataFrame({"id": ["a"]}), 1)


def test_load_test_clusters_reads_the_download_stage_file(tmp_path, monkeypatch):
    from reprotune.evaluation.clusters import load_test_clusters

    monkeypatch.chdir(tmp_path)
    assert load_test_clusters("t", ["x", "y"]) is None, "an older data/t/raw without clusters.json: rows"
    raw = tmp_path / "data" / "t" / "raw"
    raw.mkdir(parents=True)
    (raw / "clusters.json").write_text(json.dumps({"validation": [0], "test": [0, 0, 2]}))
    loaded = load_test_clusters("t", ["x", "y", "z"])
    assert loaded is not None and loaded.labels == (0, 0, 2) and loaded.ids == ("x", "y", "z")
    with pytest.raises(ReprotuneError, match="labels 3 test rows but the test split has 2; run the download stage"):
        load_test_clusters("t", ["x", "y"])
    (raw / "clusters.json").write_text(json.dumps({"test": [0, "1"]}))
    with pytest.raises(ReprotuneError, match="'test' must be a list of integer cluster ids"):
        load_test_clusters("t", ["x", "y"])
    (raw / "clusters.json").write_bytes(b"\xff{")
    with pytest.raises(ReprotuneError, match="clusters.json is not valid JSON"):
        load_test_clusters("t", ["x", "y"])


def test_evaluate_intervals_resample_copies_of_one_text_as_one():
    from reprotune.evaluation.clusters import TestClusters

    predictions, rows = copied_ner(hits(120, 0.6, 3), copies=4)
    ids = tuple(predictions["id"])
    scores = ner.score(predictions, NER_META, task("ner"))
    plain = with_intervals(scores, predictions, NER_META, task("ner", resamples=1000))
    clustered = with_intervals(
        scores, predictions, NER_META, task("ner", resamples=1000), TestClusters(ids, tuple(rows), "c.json")
    )
    assert clustered["f1_ci_high"] - clustered["f1_ci_low"] > 1.2 * (plain["f1_ci_high"] - plain["f1_ci_low"])
    distinct = TestClusters(ids, tuple(range(len(ids))), "c.json")
    assert with_intervals(scores, predictions, NER_META, task("ner", resamples=1000), distinct) == plain


def test_error_analysis_resamples_clusters_and_says_so():
    from reprotune.evaluation.clusters import TestClusters

    full, rows = copied_ner(hits(80, 0.5, 2), copies=3)
    lora, _ = copied_ner(hits(80, 0.7, 5), copies=3)
    clusters = TestClusters(tuple(full["id"]), tuple(rows), "c.json")
    plain = stage.significance({"full": full, "lora": lora}, NER_META, task("ner"))
    clustered = stage.significance({"full": full, "lora": lora.iloc[::-1]}, NER_META, task("ner"), clusters)
    a, b = plain["lora_minus_full"]["f1"], clustered["lora_minus_full"]["f1"]
    assert b.difference == pytest.approx(a.difference) and b.n_clusters == 80 and b.n_examples == 200
    assert b.ci_high - b.ci_low > a.ci_high - a.ci_low
    assert stage.significance_json(clustered, task("ner"))["clusters"] == 80
    lines = "\n".join(stage.significance_lines(clustered))
    assert "the same 200 test examples (80 clusters of copies and near-copies of one text, each resampled" in lines


def test_the_report_states_the_test_split_in_rows_and_in_distinct_texts():
    from reprotune.reporting.report import overlap_lines

    test = {
        "examples": 377,
        "distinct_texts": 345,
        "with_text_in_train": 0,
        "split_from": "source",
        "near_duplicate_clusters": 340,
        "with_near_duplicate_in_train": 3,
    }
    report = {"overlap": {"test": test, "validation": {"examples": 10, "with_text_in_train": 0}}}
    text = "\n".join(overlap_lines(report, 340))
    assert "**Test split:** 377 rows, 345 distinct texts, 340 clusters of near-duplicates; 3 of its rows" in text
    assert "resample its 340 clusters, each with all its rows" in text
    assert "resample rows, so a repeated text counts more than once" in "\n".join(overlap_lines(report))
    older = {"overlap": {"test": {"examples": 5, "with_text_in_train": 1}}}
    assert "Test split" not in "\n".join(overlap_lines(older)), "an older report without the counts says nothing"


def test_the_stage_reads_the_test_clusters_next_to_the_raw_splits(tmp_path, monkeypatch):
    import yaml
    from datasets import Dataset

    monkeypatch.chdir(tmp_path)
    section = {
        "type": "ner",
        "model": {"name_or_path": "m"},
        "download": {"source": "conll", "path": "x"},
        **{name: {} for name in ("tokenize", "train_full", "train_lora", "evaluate")},
        "error_analysis": {"significance": {"resamples": 200, "seed": 1}},
    }
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"pipeline": {"tasks": {"t": "ner"}}, "tasks": {"t": section}})
    )
    data = tmp_path / "data" / "t"
    (data / "tokenized").mkdir(parents=True)
    (data / "tokenized" / "meta.json").write_text(json.dumps(NER_META.model_dump()))
    (data / "predictions").mkdir()
    for method, rate, seed in (("baseline", 0.1, 1), ("full", 0.5, 2), ("lora", 0.7, 3)):
        frame, rows = copied_ner(hits(40, rate, seed), copies=2)
        frame.to_parquet(data / "predictions" / f"{method}.parquet")
    Dataset.from_dict({"id": list(frame["id"])}).save_to_disk(str(data / "raw" / "test"))
    (data / "raw" / "clusters.json").write_text(json.dumps({"test": rows}))

    error_analysis_stage.main(["t"])

    flat = json.loads((tmp_path / "metrics" / "t" / "significance.json").read_text())
    assert flat["examples"] == 80 and flat["clusters"] == 40
    assert "(40 clusters of copies and near-copies" in (tmp_path / "reports" / "t" / "summary.md").read_text()

"""Is LoRA good enough? Non-inferiority and equivalence against a margin, and the test across
training seeds, on made-up data with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reprotune.commands.seeds import summarise
from reprotune.evaluation import uncertainty as u
from reprotune.evaluation.clusters import TestClusters as Clusters
from reprotune.tasks.qa import metrics as qa
from reprotune.tasks.qa.params import QaMeta


def correct(n: int, rate: float, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"correct": (rng.random(n) < rate).astype(np.float64)})


@u.additive("correct")
def accuracy(sums, n_rows):
    return {"accuracy": sums["correct"] / n_rows}


def test_same_quality_is_equivalent_at_a_generous_margin_and_too_small_to_tell_at_a_tiny_one():
    rng = np.random.default_rng(0)
    right = np.arange(400) < 320  # both 80% right, on independently shuffled examples
    full = pd.DataFrame({"correct": rng.permutation(right) * 1.0})
    lora = pd.DataFrame({"correct": rng.permutation(right) * 1.0})
    generous = u.paired_difference(full, lora, accuracy, "accuracy", 1000, 0, margin=0.2)
    tiny = u.paired_difference(full, lora, accuracy, "accuracy", 1000, 0, margin=0.001)
    assert generous.margin is not None and tiny.margin is not None
    assert generous.margin.verdict == "equivalent" and generous.margin.equivalent and generous.margin.noninferior
    assert generous.margin.equivalence_p < 0.025
    assert tiny.margin.verdict == "too small to tell" and not tiny.margin.noninferior
    assert tiny.margin.noninferiority_p > 0.025
    # what it would take: more test examples than we have, and a detectable difference of a few points
    assert tiny.margin.examples_needed is not None and tiny.margin.examples_needed > 400
    assert 0.02 < tiny.margin.detectable < 0.12


def test_a_clear_gap_is_worse_and_a_small_one_within_the_margin_is_good_enough():
    rng = np.random.default_rng(1)
    full = correct(600, 0.85, rng)
    worse = u.paired_difference(full, correct(600, 0.6, rng), accuracy, "accuracy", 1000, 0, margin=0.01)
    assert worse.margin is not None and worse.margin.verdict == "worse" and worse.ci_high < -0.01
    assert not worse.margin.noninferior and worse.margin.noninferiority_p > 0.5
    # LoRA is full with 1% of the examples flipped to wrong: at worst about a point below
    flipped = full.copy()
    hits = np.flatnonzero(flipped["correct"].to_numpy() > 0)[:6]
    flipped.loc[hits, "correct"] = 0.0
    close = u.paired_difference(full, flipped, accuracy, "accuracy", 1000, 0, margin=0.05)
    assert close.margin is not None and close.difference == pytest.approx(-0.01)
    assert close.margin.verdict == "equivalent" and close.significant  # worse, and within the margin
    better = u.paired_difference(flipped, full, accuracy, "accuracy", 1000, 0, margin=0.005)
    assert better.margin is not None and better.margin.verdict == "better"


def test_the_verdict_words_follow_the_interval():
    assert u.verdict_word(-0.004, 0.006, 0.01) == "equivalent"
    assert u.verdict_word(-0.008, 0.03, 0.01) == "good enough"
    assert u.verdict_word(0.002, 0.03, 0.01) == "better"
    assert u.verdict_word(-0.06, -0.031, 0.01) == "worse"
    assert u.verdict_word(-0.03, 0.02, 0.01) == "too small to tell"
    assert u.verdict_word(float("nan"), 0.02, 0.01) == "too small to tell"


def test_lower_is_better_metrics_turn_the_margin_around():
    rng = np.random.default_rng(2)
    loss_a = pd.DataFrame({"loss_sum": rng.normal(2.0, 0.3, 300), "tokens": np.ones(300)})
    loss_b = loss_a.assign(loss_sum=loss_a["loss_sum"] + 0.5)  # b is clearly worse: higher loss

    @u.additive("loss_sum", "tokens")
    def loss(sums, n_rows):
        return {"loss": sums["loss_sum"] / sums["tokens"]}

    result = u.paired_difference(loss_a, loss_b, loss, "loss", 500, 0, margin=0.1)
    assert result.difference == pytest.approx(0.5) and result.margin is not None
    assert result.margin.lower_is_better and result.margin.verdict == "worse"
    turned = u.paired_difference(loss_b, loss_a, loss, "loss", 500, 0, margin=0.1)
    assert turned.margin is not None and turned.margin.verdict == "better"


def test_margin_keys_are_flat_and_refuse_a_bad_margin():
    rng = np.random.default_rng(3)
    stats = {"full": correct(200, 0.7, rng), "lora": correct(200, 0.7, rng)}
    results = u.compare_methods(stats, accuracy, ["accuracy"], 300, 0, margins={"accuracy": 0.02})
    flat = u.significance_metrics(results)
    for key in ("margin", "noninferior", "equivalent", "noninferiority_p", "equivalence_p", "verdict", "detectable"):
        assert f"lora_minus_full.accuracy.{key}" in flat
    assert flat["lora_minus_full.accuracy.verdict"] in u.VERDICTS
    assert all(key.count(".") in (0, 2) for key in flat)
    with pytest.raises(ValueError, match="margin"):
        u.margin_test(results["lora_minus_full"]["accuracy"], 0.0)


# ----------------------------------------------------------------------------- several seeds


def qa_frame(em: np.ndarray) -> pd.DataFrame:
    """Questions answered right (em 1) or with an unrelated answer (em 0, f1 0)."""
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(len(em))],
            "pred_text": ["paris" if hit else "berlin" for hit in em],
            "gold_texts": [["paris"]] * len(em),
        }
    )


def test_qa_across_seeds_is_the_mean_per_seed_difference_not_k_times_it():
    rng = np.random.default_rng(4)
    meta = QaMeta.model_construct(version_2_with_negative=False, window=None)
    predictions = {}
    for seed, (full_rate, lora_rate) in zip((1, 2, 3), ((0.50, 0.56), (0.52, 0.60), (0.48, 0.54))):
        predictions[seed] = {
            "baseline": qa_frame(rng.random(200) < 0.05),
            "full": qa_frame(rng.random(200) < full_rate),
            "lora": qa_frame(rng.random(200) < lora_rate),
        }
    summary = summarise("t", "qa", predictions, meta, resamples=300, seed=0, margin_of={"exact_match": 0.01})
    per_seed = np.array(summary["lora.exact_match.per_seed"]) - np.array(summary["full.exact_match.per_seed"])
    assert 0 < per_seed.mean() < 0.2
    assert summary["seeds.lora_minus_full.exact_match.difference"] == pytest.approx(per_seed.mean(), abs=1e-6)
    assert summary["seeds.lora_minus_full.exact_match.test"] == "seed t-test with test-example variance"
    assert summary["seeds.lora_minus_full.exact_match.ci_low"] < per_seed.mean()
    assert summary["seeds.lora_minus_full.exact_match.ci_high"] > per_seed.mean()
    assert "seeds.lora_minus_full.exact_match.verdict" in summary
    qa.HEADLINE(predictions[1]["full"].assign(em=1.0, f1=1.0))  # the family's headline still reads em / f1


def null_runs(rng: np.random.Generator, seeds: int, n: int, sd: float) -> tuple[list, list]:
    """Both methods drawn alike: each seed's accuracy 0.8 + N(0, sd), examples of mixed difficulty."""
    difficulty = rng.normal(0, 1, n)
    runs = []
    for _ in range(2 * seeds):
        rate = 0.8 + rng.normal(0, sd)
        shift = np.log(rate / (1 - rate))
        runs.append(pd.DataFrame({"correct": (rng.random(n) < 1 / (1 + np.exp(-(shift - difficulty)))) * 1.0}))
    return runs[:seeds], runs[seeds:]


def test_the_seed_test_holds_its_level_under_a_null_with_seed_variance():
    """5 seeds each, seed sd of accuracy 0.024, no true difference. Resampling test examples only
    (the old pooled test) rejects far too often; the seed test stays near the nominal 5%."""
    rng = np.random.default_rng(5)
    simulations, seed_rejections, pooled_rejections = 300, 0, 0
    for i in range(simulations):
        runs_a, runs_b = null_runs(rng, 5, 300, 0.024)
        result = u.seed_difference(runs_a, runs_b, accuracy, "accuracy", 200, i)
        seed_rejections += result.significant
        pooled_a = pd.DataFrame({"correct": sum(run["correct"] for run in runs_a) / 5})
        pooled_b = pd.DataFrame({"correct": sum(run["correct"] for run in runs_b) / 5})
        pooled_rejections += u.paired_difference(pooled_a, pooled_b, accuracy, "accuracy", 200, i).significant
    assert seed_rejections / simulations <= 0.08
    assert pooled_rejections / simulations >= 0.15


def test_the_seed_test_finds_a_real_difference_and_needs_two_seeds():
    rng = np.random.default_rng(6)
    runs_a = [correct(400, 0.70 + rng.normal(0, 0.01), rng) for _ in range(4)]
    runs_b = [correct(400, 0.85 + rng.normal(0, 0.01), rng) for _ in range(4)]
    result = u.seed_difference(runs_a, runs_b, accuracy, "accuracy", 300, 0, margin=0.01)
    assert result.significant and result.ci_low > 0.05 and result.seeds == 4 and np.isfinite(result.df)
    assert result.margin is not None and result.margin.verdict == "better"
    assert result.fixed_variance > 0 and result.se**2 > result.fixed_variance
    with pytest.raises(ValueError, match="two seeds"):
        u.seed_difference(runs_a[:1], runs_b, accuracy, "accuracy", 100, 0)


def test_across_seeds_the_test_examples_resample_by_duplicate_cluster():
    """reprotune-seeds passes the download stage's clusters: the summary counts clusters, and a
    test split made of pairs of copies gets a larger standard error than the same rows read as distinct."""
    rng = np.random.default_rng(7)
    meta = QaMeta.model_construct(version_2_with_negative=False, window=None)
    predictions = {}
    for seed, (full_rate, lora_rate) in zip((1, 2, 3), ((0.50, 0.56), (0.52, 0.60), (0.48, 0.54))):
        frames = {
            m: rng.random(100) < rate for m, rate in (("baseline", 0.05), ("full", full_rate), ("lora", lora_rate))
        }
        predictions[seed] = {m: qa_frame(np.repeat(hits, 2)) for m, hits in frames.items()}  # every row twice
    ids = tuple(f"q{i}" for i in range(200))
    clusters = Clusters(ids, tuple(i // 2 for i in range(200)), "clusters.json")
    plain = summarise("t", "qa", predictions, meta, resamples=300, seed=0)
    paired = summarise("t", "qa", predictions, meta, resamples=300, seed=0, clusters=clusters)
    key = "seeds.lora_minus_full.exact_match"
    assert paired["seeds.clusters"] == 100 and "seeds.clusters" not in plain
    assert paired[f"{key}.difference"] == pytest.approx(plain[f"{key}.difference"])
    # The examples' variance part doubles (100 clusters, not 200 rows); the seeds' part is the same.
    assert paired[f"{key}.se"] > plain[f"{key}.se"], (paired[f"{key}.se"], plain[f"{key}.se"])

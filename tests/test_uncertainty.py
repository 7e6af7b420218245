"""Bootstrap intervals and paired tests give known answers on hand-made predictions."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from reprotune.evaluation import uncertainty as u
from reprotune.evaluation.uncertainty import (
    additive,
    bootstrap_intervals,
    interval_metrics,
    mcnemar,
    paired_accuracy,
    paired_difference,
    verdict,
)

# ----------------------------------------------------------------------------- headlines of the kinds families use


@additive("tp", "fp", "fn")
def entity_f1(sums, n_rows):
    denominator = 2 * sums["tp"] + sums["fp"] + sums["fn"]
    return {"f1": np.where(denominator > 0, 2 * sums["tp"] / denominator, 0.0)}


def entity_f1_plain(stats: pd.DataFrame) -> dict[str, float]:
    tp, fp, fn = (float(stats[c].sum()) for c in ("tp", "fp", "fn"))
    denominator = 2 * tp + fp + fn
    return {"f1": 2 * tp / denominator if denominator else 0.0}


@additive("em", "f1")
def qa_headline(sums, n_rows):
    return {"exact_match": sums["em"] / n_rows, "f1": sums["f1"] / n_rows}


@additive("loss_sum", "masked_tokens", "correct")
def mlm_headline(sums, n_rows):
    return {
        "perplexity": np.exp(sums["loss_sum"] / sums["masked_tokens"]),
        "accuracy": sums["correct"] / sums["masked_tokens"],
    }


def accuracy_plain(stats: pd.DataFrame) -> dict[str, float]:
    return {"accuracy": float((stats["gold"] == stats["predicted"]).mean())}


def ner_stats(n: int, seed: int, recall: float = 0.6, spurious: float = 0.3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 4, size=n)
    tp = rng.binomial(gold, recall)
    return pd.DataFrame({"tp": tp, "fp": rng.poisson(spurious, size=n), "fn": gold - tp})


def correctness(n: int, rate: float, seed: int) -> np.ndarray:
    """Exactly round(rate * n) correct examples, in a seeded order."""
    correct = np.zeros(n, dtype=bool)
    correct[: round(rate * n)] = True
    return np.random.default_rng(seed).permutation(correct)


def classification_stats(correct: np.ndarray) -> pd.DataFrame:
    gold = np.array(["pos", "neg"] * (len(correct) // 2))
    predicted = np.where(correct, gold, np.where(gold == "pos", "neg", "pos"))
    return pd.DataFrame({"gold": gold, "predicted": predicted})


# ----------------------------------------------------------------------------- intervals


def test_additive_headline_is_an_ordinary_headline():
    stats = ner_stats(50, 0)
    assert u.is_additive(entity_f1) and not u.is_additive(entity_f1_plain)
    assert entity_f1(stats)["f1"] == pytest.approx(entity_f1_plain(stats)["f1"])
    qa = pd.DataFrame({"em": [1, 0, 1, 1], "f1": [1.0, 0.5, 1.0, 0.75]})
    assert qa_headline(qa) == pytest.approx({"exact_match": 0.75, "f1": 0.8125})
    mlm = pd.DataFrame({"loss_sum": [2.0, 4.0], "masked_tokens": [2, 2], "correct": [1, 2]})
    assert mlm_headline(mlm) == pytest.approx({"perplexity": math.exp(1.5), "accuracy": 0.75})


def test_entity_f1_bootstrap_matches_a_slow_reference_loop():
    stats = ner_stats(12, 1)
    n_resamples, seed, level = 50, 7, 0.9
    rng = np.random.default_rng(seed)
    reference = []
    for _ in range(n_resamples):
        rows = stats.iloc[rng.integers(0, len(stats), size=len(stats))]
        tp, fp, fn = rows["tp"].sum(), rows["fp"].sum(), rows["fn"].sum()
        reference.append(2 * tp / (2 * tp + fp + fn))
    expected = tuple(np.quantile(reference, [0.05, 0.95]))
    fast = bootstrap_intervals(stats, entity_f1, n_resamples, seed, level)["f1"]
    slow = bootstrap_intervals(stats, entity_f1_plain, n_resamples, seed, level)["f1"]
    assert fast == pytest.approx(expected, abs=1e-12)
    assert slow == pytest.approx(expected, abs=1e-12)


def test_chunking_does_not_change_the_intervals(monkeypatch):
    stats = ner_stats(200, 2)
    whole = bootstrap_intervals(stats, entity_f1, 300, 3)
    monkeypatch.setattr(u, "_MAX_CELLS", 200 * 7)  # chunks of 7 resamples
    assert bootstrap_intervals(stats, entity_f1, 300, 3) == whole


def test_intervals_are_deterministic_contain_the_estimate_and_shrink_with_more_data():
    small, large = ner_stats(100, 4), ner_stats(5000, 4)
    first = bootstrap_intervals(small, entity_f1, 500, 11)
    assert bootstrap_intervals(small, entity_f1, 500, 11) == first
    assert bootstrap_intervals(small, entity_f1, 500, 12) != first
    widths = []
    for stats in (small, large):
        low, high = bootstrap_intervals(stats, entity_f1, 500, 11)["f1"]
        assert low <= entity_f1(stats)["f1"] <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # ~ 1/sqrt(50) in theory


def test_plain_headline_intervals_for_classification():
    stats = classification_stats(correctness(200, 0.8, 0))
    low, high = bootstrap_intervals(stats, accuracy_plain, 200, 0)["accuracy"]
    assert low < 0.8 < high and high - low < 0.2


def test_higher_level_gives_a_wider_interval():
    stats = ner_stats(300, 5)
    low90, high90 = bootstrap_intervals(stats, entity_f1, 400, 1, level=0.9)["f1"]
    low99, high99 = bootstrap_intervals(stats, entity_f1, 400, 1, level=0.99)["f1"]
    assert low99 < low90 < high90 < high99


def test_flat_keys_for_the_metrics_json():
    assert interval_metrics({"f1": (0.3, 0.5), "precision": (0.1, 0.2)}) == {
        "f1_ci_low": 0.3,
        "f1_ci_high": 0.5,
        "precision_ci_low": 0.1,
        "precision_ci_high": 0.2,
    }
    assert u.interval_keys("exact_match") == ("exact_match_ci_low", "exact_match_ci_high")


def test_undefined_metric_is_left_out_of_the_interval():
    @additive("x")
    def ratio(sums, n_rows):
        return {"ratio": sums["x"] / sums["x"], "never": np.full_like(sums["x"], np.nan)}

    stats = pd.DataFrame({"x": [0.0] * 9 + [1.0]})
    intervals = bootstrap_intervals(stats, ratio, 100, 0)
    assert intervals["ratio"] == (1.0, 1.0)
    assert all(math.isnan(v) for v in intervals["never"])


def test_bad_arguments_are_refused():
    stats = ner_stats(10, 0)
    with pytest.raises(ValueError):
        bootstrap_intervals(stats.iloc[:0], entity_f1, 10, 0)
    with pytest.raises(ValueError):
        bootstrap_intervals(stats, entity_f1, 0, 0)
    with pytest.raises(ValueError):
        bootstrap_intervals(stats, entity_f1, 10, 0, level=1.0)
    with pytest.raises(ValueError, match="column"):
        bootstrap_intervals(stats.drop(columns="fp"), entity_f1, 10, 0)


@pytest.mark.serial  # a time limit: no other test on the CPU
def test_one_thousand_resamples_of_ten_thousand_rows_is_fast():
    stats = ner_stats(10_000, 6)
    start = time.perf_counter()
    bootstrap_intervals(stats, entity_f1, 1000, 0)
    assert time.perf_counter() - start < 2.0


# ----------------------------------------------------------------------------- paired tests


@pytest.mark.parametrize("headline", [entity_f1, entity_f1_plain], ids=["additive", "plain"])
@pytest.mark.parametrize("test", ["bootstrap", "randomisation"])
def test_identical_predictions_are_not_different(headline, test):
    stats = ner_stats(60, 8)
    result = paired_difference(stats, stats.copy(), headline, "f1", 200, 0, test=test)
    assert result.difference == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_value == 1.0
    assert not result.significant
    assert result.a == result.b == pytest.approx(entity_f1_plain(stats)["f1"])


@pytest.mark.parametrize("test", ["bootstrap", "randomisation"])
def test_a_clear_improvement_is_significant(test):
    n = 200
    right_a, right_b = correctness(n, 0.5, 1), correctness(n, 0.9, 2)
    qa_a = pd.DataFrame({"em": right_a.astype(float), "f1": right_a.astype(float)})
    qa_b = pd.DataFrame({"em": right_b.astype(float), "f1": right_b.astype(float)})
    result = paired_difference(qa_a, qa_b, qa_headline, "exact_match", 1000, 0, test=test, names=("full", "LoRA"))
    assert result.difference == pytest.approx(0.4)
    assert result.ci_low > 0.25 and result.ci_high < 0.55
    assert result.p_value < 0.01 and result.significant
    assert result.p_value >= 1 / 1001  # a resampling p never reaches 0
    assert verdict(result).startswith("LoRA \u2212 full = +0.400 [")
    assert verdict(result).endswith(": significant at 95%")


def test_plain_and_additive_paired_tests_agree():
    a, b = ner_stats(80, 9, recall=0.5), ner_stats(80, 10, recall=0.7)
    for test in ("bootstrap", "randomisation"):
        fast = paired_difference(a, b, entity_f1, "f1", 100, 3, test=test)
        slow = paired_difference(a, b, entity_f1_plain, "f1", 100, 3, test=test)
        assert fast.difference == pytest.approx(slow.difference)
        assert (fast.ci_low, fast.ci_high) == pytest.approx((slow.ci_low, slow.ci_high))
        assert fast.p_value == pytest.approx(slow.p_value)


def test_paired_randomisation_swaps_mixed_columns():
    right_a, right_b = correctness(100, 0.6, 3), correctness(100, 0.65, 4)
    a, b = classification_stats(right_a), classification_stats(right_b)
    result = paired_difference(a, b, accuracy_plain, "accuracy", 100, 0, test="randomisation")
    assert result.difference == pytest.approx(0.05)
    assert 0.0 < result.p_value <= 1.0 and result.test == "approximate randomisation"


def test_paired_interval_is_narrower_than_unpaired_for_correlated_methods():
    a = ner_stats(400, 11)
    b = a.copy()
    b.loc[::10, "tp"] += 1  # b finds a few more entities on the same sentences
    paired = paired_difference(a, b, entity_f1, "f1", 500, 0)
    low_a, high_a = bootstrap_intervals(a, entity_f1, 500, 0)["f1"]
    assert paired.ci_high - paired.ci_low < (high_a - low_a) / 2
    assert paired.ci_low > 0 and paired.significant


def test_paired_difference_is_deterministic_and_refuses_misaligned_rows():
    a, b = ner_stats(50, 12), ner_stats(50, 13)
    assert paired_difference(a, b, entity_f1, "f1", 200, 5) == paired_difference(a, b, entity_f1, "f1", 200, 5)
    with pytest.raises(ValueError, match="same test examples"):
        paired_difference(a, b.iloc[:49], entity_f1, "f1", 10, 0)
    with pytest.raises(KeyError):
        paired_difference(a, b, entity_f1, "recall", 10, 0)
    with pytest.raises(ValueError):
        paired_difference(a, b, entity_f1, "f1", 10, 0, test="t-test")  # type: ignore[arg-type]


def test_perplexity_difference_from_summed_losses():
    blocks = pd.DataFrame({"loss_sum": [4.0] * 30, "masked_tokens": [2] * 30, "correct": [1] * 30})
    better = blocks.assign(loss_sum=3.0)
    result = paired_difference(blocks, better, mlm_headline, "perplexity", 200, 0)
    assert result.difference == pytest.approx(math.exp(1.5) - math.exp(2.0))
    assert result.ci_low == pytest.approx(result.difference) and result.ci_high == pytest.approx(result.difference)
    assert result.significant


# ----------------------------------------------------------------------------- McNemar


def discordant(b: int, c: int, agree: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """b examples only a gets right, c only b gets right, ``agree`` both get right."""
    right_a = np.array([True] * b + [False] * c + [True] * agree)
    right_b = np.array([False] * b + [True] * c + [True] * agree)
    return right_a, right_b


def test_mcnemar_exact_textbook_case():
    statistic, p_value = mcnemar(*discordant(10, 2))
    assert statistic == 2.0
    assert p_value == pytest.approx(2 * 79 / 4096)  # 0.0386
    assert p_value == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar(*discordant(2, 10))[1] == pytest.approx(p_value)


def test_mcnemar_chi_square_with_continuity_correction():
    statistic, p_value = mcnemar(*discordant(30, 10))
    assert statistic == pytest.approx((20 - 1) ** 2 / 40)
    assert p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)))
    assert p_value == pytest.approx(0.00270, abs=1e-4)


def test_mcnemar_without_discordant_pairs_and_misaligned_input():
    right = np.array([True, False, True])
    assert mcnemar(right, right) == (0.0, 1.0)
    assert mcnemar(*discordant(3, 3))[1] == 1.0
    with pytest.raises(ValueError):
        mcnemar(right, right[:2])


def test_paired_accuracy_decides_by_the_bootstrap_and_shows_mcnemar_beside_it():
    right_a, right_b = discordant(2, 10)
    result = paired_accuracy(right_a, right_b, 500, 0, names=("full", "LoRA"))
    assert result.test == "paired bootstrap"
    assert result.difference == pytest.approx(8 / 32)
    assert result.mcnemar_p_value == pytest.approx(2 * 79 / 4096)
    assert result.significant == (result.ci_low > 0 or result.ci_high < 0)
    same = paired_accuracy(right_a, right_a, 100, 0)
    assert same.difference == 0 and same.p_value == 1.0 and not same.significant and same.mcnemar_p_value == 1.0


def test_accuracy_verdict_never_contradicts_its_interval():
    """The issue's case: McNemar (continuity-corrected) said p = 0.055 for an interval that left out
    zero. Now the bootstrap decides; across discordant counts near the threshold the verdict
    always matches the interval, and McNemar disagrees at least once (so the check can fail)."""
    disagreements = 0
    for b, c in [(8, 18), (10, 21), (9, 20), (10, 22), (12, 25), (11, 23), (14, 28), (20, 30)]:
        right_a, right_b = discordant(b, c, agree=300 - b - c)
        result = paired_accuracy(right_a, right_b, 1000, 0)
        excludes_zero = result.ci_low > 0 or result.ci_high < 0
        assert result.significant == excludes_zero == (result.p_value < 0.05)
        assert result.mcnemar_p_value is not None
        disagreements += (result.mcnemar_p_value < 0.05) != excludes_zero
    assert disagreements >= 1


def test_bootstrap_p_value_is_dual_to_the_percentile_interval():
    rng = np.random.default_rng(3)
    for trial in range(300):
        values = rng.normal(rng.normal(0, 2), 1, size=1000)
        if trial % 3 == 0:
            values = np.round(values)  # ties at zero
        p_value = u._percentile_p(values)
        for level in (0.8, 0.9, 0.95, 0.99):
            low, high = u._percentile_interval(values, level)
            assert (low > 0 or high < 0) == (p_value < 1 - level)
    assert u._percentile_p(np.zeros(50)) == 1.0


# ----------------------------------------------------------------------------- words


def test_verdict_sentence():
    result = u.PairedResult(
        metric="f1",
        a=0.40,
        b=0.388,
        difference=-0.012,
        ci_low=-0.031,
        ci_high=0.006,
        p_value=0.21,
        test="paired bootstrap",
        significant=False,
        level=0.95,
        n_resamples=1000,
        n_examples=360,
        name_a="full",
        name_b="LoRA",
    )
    assert verdict(result) == ("LoRA \u2212 full = \u22120.012 [\u22120.031, +0.006], p = 0.21: not significant at 95%")
    assert "p < 0.001" in verdict(u.PairedResult(**{**result.to_dict(), "p_value": 0.0004, "significant": True}))
    assert "p = 0.039" in verdict(u.PairedResult(**{**result.to_dict(), "p_value": 0.0386}))


# ----------------------------------------------------------------------------- duplicates: the cluster bootstrap


def with_copies(stats: pd.DataFrame, copies: int, every: int) -> tuple[pd.DataFrame, np.ndarray]:
    """`stats` with every `every`-th row repeated `copies` more times (appended at the end, as a
    test split holding one text several times), and each row's cluster: the first row of its text."""
    repeated = [i for i in range(0, len(stats), every) for _ in range(copies)]
    rows = [*range(len(stats)), *repeated]
    return stats.iloc[rows].reset_index(drop=True), np.array(rows)


@pytest.mark.parametrize("headline", [entity_f1, entity_f1_plain])
def test_distinct_clusters_give_the_row_bootstrap_draw_for_draw(headline):
    stats = ner_stats(80, 4)
    rows = bootstrap_intervals(stats, headline, 100, 6)
    assert bootstrap_intervals(stats, headline, 100, 6, clusters=np.arange(80)) == rows
    # labels need not be row numbers: any labels without a repeat are the row bootstrap
    assert bootstrap_intervals(stats, headline, 100, 6, clusters=np.arange(80)[::-1] * 7) == rows
    a, b = ner_stats(80, 5), ner_stats(80, 6, recall=0.8)
    for test in ("bootstrap", "randomisation"):
        plain = paired_difference(a, b, headline, "f1", 100, 1, test=test)
        clustered = paired_difference(a, b, headline, "f1", 100, 1, test=test, clusters=list(range(80)))
        assert (clustered.ci_low, clustered.ci_high, clustered.p_value) == (plain.ci_low, plain.ci_high, plain.p_value)
        assert clustered.n_clusters is None


def test_copies_of_one_text_widen_the_interval_when_resampled_as_one_cluster():
    stats, clusters = with_copies(ner_stats(150, 7), copies=4, every=3)  # 350 rows, 150 texts
    row_low, row_high = bootstrap_intervals(stats, entity_f1, 1000, 2)["f1"]
    low, high = bootstrap_intervals(stats, entity_f1, 1000, 2, clusters=clusters)["f1"]
    assert high - low > 1.2 * (row_high - row_low)
    point = entity_f1(stats)["f1"]
    assert low < point < high
    # the plain path draws the same clusters and takes the same rows
    slow = bootstrap_intervals(stats, entity_f1_plain, 300, 2, clusters=clusters)["f1"]
    assert slow == pytest.approx(bootstrap_intervals(stats, entity_f1, 300, 2, clusters=clusters)["f1"], abs=1e-12)


def test_a_mean_divides_by_each_cluster_resamples_own_row_count():
    rng = np.random.default_rng(3)
    stats = pd.DataFrame({"em": (rng.random(60) < 0.4).astype(float), "f1": rng.random(60)})
    copied, clusters = with_copies(stats, copies=3, every=4)

    def qa_plain(frame: pd.DataFrame) -> dict[str, float]:
        return {"exact_match": float(frame["em"].mean()), "f1": float(frame["f1"].mean())}

    fast = bootstrap_intervals(copied, qa_headline, 400, 9, clusters=clusters)
    slow = bootstrap_intervals(copied, qa_plain, 400, 9, clusters=clusters)
    for metric in ("exact_match", "f1"):
        assert fast[metric] == pytest.approx(slow[metric], abs=1e-12)
        assert 0.0 <= fast[metric][0] <= fast[metric][1] <= 1.0


def test_paired_tests_resample_and_swap_whole_clusters():
    a, clusters = with_copies(ner_stats(120, 11), copies=5, every=2)
    b, _ = with_copies(ner_stats(120, 11, recall=0.75), copies=5, every=2)
    rows = paired_difference(a, b, entity_f1, "f1", 1000, 4)
    clustered = paired_difference(a, b, entity_f1, "f1", 1000, 4, clusters=clusters, margin=0.02)
    assert clustered.difference == rows.difference
    assert clustered.ci_high - clustered.ci_low > 1.2 * (rows.ci_high - rows.ci_low)
    assert clustered.se > rows.se and clustered.n_clusters == 120 and clustered.n_examples == 420
    assert clustered.margin is not None
    randomised = paired_difference(a, b, entity_f1, "f1", 150, 4, test="randomisation", clusters=clusters)
    slow = paired_difference(a, b, entity_f1_plain, "f1", 150, 4, test="randomisation", clusters=clusters)
    assert randomised.p_value == pytest.approx(slow.p_value)
    assert u.significance_metrics({"lora_minus_full": {"f1": clustered}})["clusters"] == 120
    assert "clusters" not in u.significance_metrics({"lora_minus_full": {"f1": rows}})


def test_the_seed_test_resamples_clusters_for_its_example_variance():
    base = ner_stats(90, 1)

    gold = (base["tp"] + base["fn"]).to_numpy()
    helped = np.random.default_rng(99).random(90) < 0.5  # sentences where b finds every entity

    def run(seed: int, better: bool) -> pd.DataFrame:
        """One training run on the same test sentences: b's gain depends on the sentence, and each
        seed misses one entity in a few sentences of its own."""
        tp = np.where(helped & better, gold, base["tp"].to_numpy())
        missed = np.random.default_rng(seed).choice(90, size=4, replace=False)
        tp[missed] = np.maximum(tp[missed] - 1, 0)
        return pd.DataFrame({"tp": tp, "fp": base["fp"], "fn": gold - tp})

    runs = [with_copies(run(seed, seed >= 2), copies=4, every=2) for seed in range(4)]
    clusters = runs[0][1]
    frames = [frame for frame, _ in runs]
    rows = u.seed_difference(frames[:2], frames[2:], entity_f1, "f1", 300, 0)
    clustered = u.seed_difference(frames[:2], frames[2:], entity_f1, "f1", 300, 0, clusters=clusters)
    assert clustered.difference == rows.difference and clustered.n_clusters == 90
    assert clustered.se > rows.se


def test_clusters_must_label_every_row():
    with pytest.raises(ValueError, match="clusters must label every row: 3 labels for 40 rows"):
        bootstrap_intervals(ner_stats(40, 1), entity_f1, 10, 0, clusters=[0, 0, 1])

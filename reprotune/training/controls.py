"""Training controls on top of the HF Trainer: early stopping on the selection metric,
and class-weighted cross-entropy for the families whose loss is a softmax over labels.

Both are generic: nothing here knows a family beyond its `peft_task_type` (sequence or
token classification take class weights; QA spans and MLM's masked-only loss do not)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from reprotune.core.errors import ReprotuneError
from reprotune.core.params import PARAMS_FILE, TrainParams

IGNORE_INDEX = -100
CLASS_WEIGHT_TASK_TYPES = {"SEQ_CLS": "examples", "TOKEN_CLS": "labelled tokens"}
"""peft task types whose loss is cross-entropy over `labels`, and what `balanced` counts."""


# -- early stopping -------------------------------------------------------------------


def early_stopping_callback(params: TrainParams) -> Any | None:
    """The transformers EarlyStoppingCallback for `early_stopping`, recording when it fired."""
    if params.early_stopping is None:
        return None
    from transformers import EarlyStoppingCallback

    class RecordingEarlyStopping(EarlyStoppingCallback):
        stopped_at: tuple[float, int] | None = None

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            super().on_evaluate(args, state, control, metrics, **kwargs)
            if control.should_training_stop and self.stopped_at is None:
                self.stopped_at = (float(state.epoch or 0.0), int(state.global_step))

    return RecordingEarlyStopping(
        early_stopping_patience=params.early_stopping.patience,
        early_stopping_threshold=params.early_stopping.threshold,
    )


def _epoch_at_step(log_history: Sequence[Mapping[str, Any]], step: int | None) -> float | None:
    if step is None:
        return None
    epochs = [entry["epoch"] for entry in log_history if entry.get("step") == step and "epoch" in entry]
    return round(float(epochs[-1]), 4) if epochs else None


def stopping_info(state: Any, callback: Any | None, metric: str, greater_is_better: bool) -> dict[str, Any]:
    """What the train info says about where training ended and which checkpoint won.

    `best_validation_metric` / `best_validation_value` name the validation metric the
    best checkpoint was chosen by (the one `reprotune-sweep best` ranks experiments by)."""
    stopped = callback is not None and callback.stopped_at is not None
    best_step = getattr(state, "best_global_step", None) or None
    return {
        "early_stopping": callback is not None,
        "stopped_early": stopped,
        "stopped_at_epoch": round(float(state.epoch or 0.0), 4),
        "stopped_at_step": int(state.global_step),
        "best_step": best_step,
        "best_epoch": _epoch_at_step(state.log_history, best_step),
        "best_validation_metric": metric.removeprefix("eval_"),
        "best_validation_value": state.best_metric,
        "best_validation_greater_is_better": bool(greater_is_better),
    }


# -- class weights --------------------------------------------------------------------


def check_class_weights(params: TrainParams, peft_task_type: str | None, task_type: str, where: str) -> None:
    """Refuse `class_weights` for families whose loss is not a softmax over labels."""
    if params.class_weights != "none" and peft_task_type not in CLASS_WEIGHT_TASK_TYPES:
        raise ReprotuneError(
            f"{PARAMS_FILE}: '{where}' applies to classification and ner tasks only, not {task_type}; "
            "remove it or set it to none"
        )


EXAMPLE_COLUMN = "example_index"
"""Set by tokenize when one example became several feature rows (classification windows)."""


def label_counts(train_set: Any, n_labels: int, batch_size: int = 10_000) -> list[int]:
    """How often each label id occurs in the train features' `labels` column: once per
    example (classification; windows of one document count once, by `example_index`) or
    once per labelled position (ner, labels != -100)."""
    counts = torch.zeros(n_labels, dtype=torch.long)
    columns = ["labels"] + ([EXAMPLE_COLUMN] if EXAMPLE_COLUMN in train_set.column_names else [])
    seen: set[int] = set()
    for batch in train_set.select_columns(columns).iter(batch_size=batch_size):
        column = batch["labels"]
        if column and isinstance(column[0], list):
            flat = [label for row in column for label in row]
        elif EXAMPLE_COLUMN in batch:
            flat = []
            for example, label in zip(batch[EXAMPLE_COLUMN], column):
                if example not in seen:
                    seen.add(example)
                    flat.append(label)
        else:
            flat = column
        ids = torch.as_tensor(flat, dtype=torch.long)
        ids = ids[ids != IGNORE_INDEX]
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= n_labels):
            raise ReprotuneError(f"train features hold label ids outside 0..{n_labels - 1}; rerun tokenize")
        counts += torch.bincount(ids, minlength=n_labels)
    return counts.tolist()


def class_weight_map(
    setting: str | Mapping[str, float], labels: Sequence[str], counts: Sequence[int] | None, where: str
) -> dict[str, float] | None:
    """label -> loss weight, or None for `none`.

    `balanced`: n_samples / (n_classes * count) over the labels present in train (sklearn's
    formula), so the weights average to 1 per training example or token; a label train
    never shows keeps 1.0 (it only ever enters the validation loss). A mapping names
    labels explicitly; unlisted labels weigh 1.0."""
    if setting == "none":
        return None
    if setting == "balanced":
        assert counts is not None
        present = [count for count in counts if count > 0]
        total = sum(present)
        return {
            label: round(total / (len(present) * count), 6) if count > 0 else 1.0
            for label, count in zip(labels, counts)
        }
    assert isinstance(setting, Mapping)
    unknown = [name for name in setting if name not in labels]
    if unknown:
        raise ReprotuneError(
            f"{PARAMS_FILE}: '{where}' names unknown label '{unknown[0]}'; labels: {', '.join(labels)}"
        )
    return {label: float(setting.get(label, 1.0)) for label in labels}


def weighted_loss_trainer(base: type, weights: Sequence[float]) -> type:
    """`base` with its loss replaced by class-weighted cross-entropy over `labels`
    (ignore_index -100), for training and the validation loss alike.

    The loss is the weighted mean of each micro-batch (torch's `weight=` reduction), and
    the Trainer divides it by the gradient accumulation steps (`loss_is_scaled_for_ga`)."""
    weight = torch.tensor(list(weights), dtype=torch.float32)

    class WeightedLossTrainer(base):
        class_weights = weight
        loss_is_scaled_for_ga = False

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            labels = inputs["labels"]
            outputs = model(**{key: value for key, value in inputs.items() if key != "labels"})
            logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
            flat_labels = labels.reshape(-1).to(logits.device)
            if bool((flat_labels != IGNORE_INDEX).any()):
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(),
                    flat_labels,
                    weight=self.class_weights.to(logits.device),
                    ignore_index=IGNORE_INDEX,
                )
            else:  # nothing labelled in this batch: a zero that still has a graph
                loss = logits.sum() * 0.0
            return (loss, outputs) if return_outputs else loss

    return WeightedLossTrainer

"""The params.yaml schema, validated once at the start of every stage.

Layout: `pipeline.tasks` maps the tasks dvc.yaml builds to their families; `tasks.<name>` holds one
section per stage (download, tokenize, train_full, train_lora, evaluate,
error_analysis) plus `model`, which the tokenize, train and evaluate stages read.
Each task family subclasses these models with its own keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reprotune.core.errors import ReprotuneError, did_you_mean

PARAMS_FILE = "params.yaml"
SplitName = Literal["train", "validation", "test"]
Duplicates = Literal["group", "drop_from_eval", "keep"]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default. Types are
    strict (`r: "8"` or `r: true` is refused, not coerced; a float key still takes `3`), and
    every number is finite: `.inf` or `.nan` would crash or waste a run later."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


SEED_LIMIT = 2**32
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT, description="0 <= seed < 2**32, what numpy and torch accept")]
"""Every seed: numpy's `seed()` refuses anything outside [0, 2**32)."""
BATCH_LIMIT = 65536
BatchSize = Annotated[int, Field(gt=0, le=BATCH_LIMIT)]
"""Examples per batch: above 65536 no accelerator holds the activations (1e8 is a typo)."""
RESAMPLE_LIMIT = 1_000_000
EPOCH_LIMIT = 10_000
PositiveInt = Annotated[int, Field(gt=0)]


class ModelParams(Strict):
    name_or_path: str = Field(min_length=1, description="Hub id, local directory, or package:NAME/path")
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="attention kernel; None lets transformers pick (SDPA where supported)"
    )


class MakeSplits(Strict):
    """Fractions carved out of train, seeded, when a source lacks validation or test."""

    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: Seed = 42

    @model_validator(mode="after")
    def _train_keeps_a_share(self) -> MakeSplits:
        if self.validation + self.test >= 1:
            raise ValueError(
                f"validation + test must be below 1 so train keeps a share (got {self.validation} + {self.test})"
            )
        return self


class NearDuplicates(Strict):
    """`download.near_duplicates`: texts that are nearly the same count as one text.

    Folded (NFKC, case, only letters and digits kept, so tokenisation and punctuation do not
    matter), two texts are near-duplicates when the Jaccard similarity of their character
    `ngram` sets reaches `threshold` (`reprotune.sources.near_duplicates`). They join the exact
    duplicates of `download.duplicates` when splits are carved, and are counted between and
    within given splits. `threshold: null` turns the check off (exact text only)."""

    threshold: float | None = Field(
        0.9, gt=0, le=1, description="Jaccard of folded character n-grams at which two texts count as one; null: off"
    )
    ngram: int = Field(5, ge=1, le=32, description="characters per shingle")


class DownloadParams(Strict):
    source: str
    dataset: str | None = None
    config: str | None = None
    revision: str | None = None
    path: str | None = None
    files: dict[SplitName, str] | None = None
    splits: dict[SplitName, str] | None = Field(
        None, description="our split name -> the source's split name (e.g. test: validation)"
    )
    make_splits: MakeSplits = MakeSplits()
    duplicates: Duplicates = Field(
        "group",
        description="identical texts (case and white space aside) in train when make_splits carves validation/test: "
        "group keeps each text on one side (fractions count groups), drop_from_eval drops carved validation/test "
        "examples whose text stays in train (counted in download_report.json), keep carves rows as they come",
    )
    near_duplicates: NearDuplicates = NearDuplicates()
    max_samples: dict[SplitName, PositiveInt] | None = None
    sample_seed: Seed = 42


class TokenizeParams(Strict):
    max_length: int = Field(128, gt=1, le=2**20)
    num_proc: int | None = Field(None, ge=1, le=1024)
    batch_size: int = Field(1000, gt=0, le=2**20, description="examples per datasets.map batch")


Precision = Literal["auto", "fp32", "bf16", "fp16"]
LoraInit = Literal["default", "gaussian", "pissa", "olora"]


OPTIMIZERS = (
    *("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor"),
    *("adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad"),
    *("adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit"),
    *("paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit"),
    *("rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit"),
    *("galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise"),
    *("lomo", "adalomo", "grokadamw", "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd"),
    *("apollo_adamw", "apollo_adamw_layerwise", "stable_adamw"),
)
"""transformers' OptimizerNames (5.x), spelled out: importing transformers.training_args to read
them costs every stage seconds (it imports peft). tests/test_schema.py checks the two agree."""


class EarlyStoppingParams(Strict):
    """Stop when the selection metric has not improved for `patience` evaluations in a row."""

    patience: int = Field(gt=0, description="evaluations without improvement before training stops")
    threshold: float = Field(
        0.0, ge=0, description="an evaluation counts as an improvement only when it beats the best by more than this"
    )


class TrainParams(Strict):
    seed: Seed = 42
    epochs: float = Field(3.0, gt=0, le=EPOCH_LIMIT)
    max_steps: int = Field(-1, ge=-1, le=2**40, description="-1: train `epochs` epochs")
    learning_rate: float = Field(2e-5, gt=0)
    batch_size: BatchSize = 16
    eval_batch_size: BatchSize = 64
    gradient_accumulation_steps: int = Field(1, gt=0, le=BATCH_LIMIT)
    weight_decay: float = Field(0.0, ge=0)
    warmup: float = Field(0.0, ge=0, description="ratio of steps if < 1, else a number of steps")
    lr_scheduler: str = "linear"
    optim: str = Field("adamw_torch_fused", description="a transformers optimizer name; fused AdamW by default")
    max_grad_norm: float = Field(1.0, gt=0)
    metric_for_best_model: str | None = None
    precision: Precision = "auto"
    tf32: bool = True
    group_by_length: bool = True
    dataloader_workers: int = Field(0, ge=0, le=1024)
    torch_compile: bool = False
    gradient_checkpointing: bool = False
    logging_steps: int = Field(50, gt=0)
    full_determinism: bool = False
    resume: bool = False
    early_stopping: EarlyStoppingParams | None = Field(
        None, description="{patience: N, threshold: x} on the selection metric; null: train all epochs/steps"
    )
    eval_every: int | None = Field(
        None, gt=0, description="evaluate and save a checkpoint every N optimizer steps; null: every epoch"
    )
    class_weights: Literal["none", "balanced"] | dict[str, float] = Field(
        "none",
        description="classification and ner: loss weight per label; balanced = n / (n_classes * count) "
        "from the train counts, or {label: weight} (unlisted labels weigh 1.0)",
    )

    @field_validator("class_weights", mode="before")
    @classmethod
    def _label_names_as_text(cls, value: Any) -> Any:
        """YAML reads `{0: 2.0}` with a number for a key; label names are compared as text."""
        if isinstance(value, dict):
            return {
                str(int(key)) if isinstance(key, float) and key.is_integer() else str(key): item
                for key, item in value.items()
            }
        if value is None:
            return "none"
        if not isinstance(value, str) or value not in ("none", "balanced"):
            did = did_you_mean(str(value), ["none", "balanced"]) if isinstance(value, str) else ""
            raise ValueError(f"class_weights must be none, balanced or a mapping {{label: weight}}{did}")
        return value

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if not value:
                raise ValueError("class_weights mapping is empty; give {label: weight, ...}, balanced or none")
            bad = {label: weight for label, weight in value.items() if not weight > 0 or weight == float("inf")}
            if bad:
                label, weight = next(iter(bad.items()))
                raise ValueError(f"class weight of '{label}' must be a positive finite number (got {weight})")
        return value

    @field_validator("optim")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        if value not in OPTIMIZERS:
            hint = did_you_mean(value, OPTIMIZERS)
            raise ValueError(f"unknown optimizer{hint}; e.g. adamw_torch_fused, adamw_torch, sgd, adafactor")
        return value


class LoraTrainParams(TrainParams):
    learning_rate: float = Field(1e-3, gt=0)
    r: int = Field(8, gt=0, le=4096, description="LoRA rank: at most the width of the adapted layers")
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    bias: Literal["none", "all", "lora_only"] = "none"
    target_modules: Literal["auto", "all-linear", "attention"] | list[str] = Field(
        "auto",
        description="auto = attention: the query/key/value projections; all-linear: every Linear layer of the "
        "encoder (attention, intermediate, output); or a list of Linear module names",
    )
    use_rslora: bool = Field(False, description="rank-stabilised LoRA: scale the update by alpha/sqrt(r), not alpha/r")
    use_dora: bool = Field(False, description="DoRA: learn each weight's magnitude apart from its LoRA direction")
    init_lora_weights: LoraInit = Field(
        "default",
        description="default: B = 0 (the update starts at zero); gaussian: A from a Gaussian scaled by rank; "
        "pissa / olora are refused with a task head (peft's conversion for the unchanged base drops the head)",
    )
    loraplus_lr_ratio: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="LoRA+: the B matrices train at learning_rate x this ratio (peft's create_loraplus_optimizer); "
        "null: one learning rate",
    )
    head_learning_rate: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="learning rate of the fully trained task head; null: learning_rate",
    )

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("target_modules is an empty list; give module names, auto, attention or all-linear")
        return value


class SearchRange(Strict):
    """A numeric range to sample from (TPE/random samplers): integer when the key is."""

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    log: bool = Field(False, description="sample on a log scale (learning rates)")
    step: float | None = Field(None, gt=0, allow_inf_nan=False, description="discretise the range")

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low must be below high (got {self.low} and {self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self


SearchSpace = dict[str, list[Any] | SearchRange]
"""train-section key -> the values to try (a list) or a range."""

DEFAULT_FULL_SPACE: SearchSpace = {"learning_rate": SearchRange(low=1e-5, high=2e-4, log=True)}
DEFAULT_LORA_SPACE: SearchSpace = {
    "learning_rate": SearchRange(low=2e-4, high=5e-3, log=True),
    "target_modules": ["attention", "all-linear"],
    "r": [8, 16],
}


class SearchParams(Strict):
    """`tasks.<name>.search`: tune each method on validation with the same budget before training it."""

    enabled: bool = Field(False, description="false: the train stages use train_full / train_lora as written")
    trials: int | dict[Literal["full", "lora"], int] = Field(
        8, description="trials per method (equal budgets), or {full: N, lora: M}; the report warns when they differ"
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="optuna sampler; grid takes lists only and tries each combination at most once"
    )
    seed: Seed = Field(0, description="seeds the sampler")
    pruner: Literal["median", "none"] = Field(
        "median", description="median: stop a trial whose validation score after an epoch is below the median so far"
    )
    max_epochs: float | None = Field(
        None, gt=0, le=EPOCH_LIMIT, description="epoch cap shared by both methods; null: no cap"
    )
    storage: str | None = Field(
        None,
        min_length=1,
        description="an Optuna storage URL (postgresql://..., mysql://..., sqlite:///...) or a journal file path "
        "that workers share; null: .reprotune/search/<task>.journal in the project",
    )
    full: SearchSpace = Field(default_factory=lambda: dict(DEFAULT_FULL_SPACE), description="full's search space")
    lora: SearchSpace = Field(default_factory=lambda: dict(DEFAULT_LORA_SPACE), description="LoRA's search space")

    @field_validator("trials")
    @classmethod
    def _positive_trials(cls, value: Any) -> Any:
        counts = value.values() if isinstance(value, dict) else [value]
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in counts):
            raise ValueError(f"trials must be a whole number of at least 1, or {{full: N, lora: M}} (got {value!r})")
        if isinstance(value, dict) and set(value) != {"full", "lora"}:
            raise ValueError("trials as a mapping needs both full and lora")
        return value

    @field_validator("full", "lora")
    @classmethod
    def _nonempty_choices(cls, value: SearchSpace) -> SearchSpace:
        for key, choices in value.items():
            if isinstance(choices, list) and not choices:
                raise ValueError(f"'{key}' has no values to try")
        return value

    def budget(self, method: str) -> int:
        return self.trials[method] if isinstance(self.trials, dict) else self.trials  # type: ignore[index]

    def space(self, method: str) -> SearchSpace:
        return self.full if method == "full" else self.lora


class BootstrapParams(Strict):
    """The seeded bootstrap over test examples behind every headline metric's interval."""

    resamples: int = Field(
        1000, ge=0, le=RESAMPLE_LIMIT, description="bootstrap resamples of the test examples; 0: no intervals"
    )
    seed: Seed = Field(0, description="seeds the resampling; same predictions and seed, same intervals")
    level: float = Field(0.95, gt=0, lt=1, description="coverage of the percentile intervals")


class SignificanceParams(Strict):
    """The paired tests of LoRA against full and of each against the baseline, on the same test examples."""

    resamples: int = Field(
        1000, gt=0, le=RESAMPLE_LIMIT, description="paired resamples (bootstrap or randomisation rounds)"
    )
    seed: Seed = Field(0, description="seeds the resampling")
    level: float = Field(0.95, gt=0, lt=1, description="a difference is significant when p < 1 - level")
    test: Literal["bootstrap", "randomisation"] = Field(
        "bootstrap",
        description="p-value of every headline metric: paired bootstrap (the p-value dual to its interval) or "
        "approximate randomisation (then the p-value decides and the interval stays the bootstrap's); "
        "accuracy also shows McNemar's p, which decides nothing",
    )


class EvaluateParams(Strict):
    batch_size: BatchSize = 64
    precision: Precision = Field("auto", description="autocast on a GPU (auto: bf16 where supported); fp32 on CPU")
    seed: Seed = Field(42, description="initialises the untrained head of the baseline")
    bootstrap: BootstrapParams = BootstrapParams()


class ErrorAnalysisParams(Strict):
    worst_n: int = Field(20, gt=0)
    significance: SignificanceParams = SignificanceParams()
    margin: float = Field(
        0.01,
        gt=0,
        allow_inf_nan=False,
        description="how much worse than full LoRA may be and still be good enough, in the headline metric's own "
        "units (0.01 = 1 point of F1 / accuracy / EM); the non-inferiority and equivalence tests use it",
    )
    margins: dict[str, float] = Field(
        default_factory=dict,
        description="per-metric margins that replace `margin` (e.g. {perplexity: 2.0, mcc: 0.02})",
    )
    verdict_metric: str | None = Field(
        None, description="the metric the report's one-sentence verdict is about; None: the family's first headline"
    )

    @field_validator("margins")
    @classmethod
    def _positive_margins(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {metric: margin for metric, margin in value.items() if not 0 < margin < float("inf")}
        if bad:
            metric, margin = next(iter(bad.items()))
            raise ValueError(f"the margin of '{metric}' must be a positive finite number (got {margin})")
        return value


Artifact = Literal["model", "onnx", "int8"]


class ExportParams(Strict):
    """`tasks.<name>.export`: what the export stage builds and how strictly it checks it."""

    enabled: bool = Field(True, description="false: the stage writes only a note (for a task you do not ship)")
    onnx: bool = Field(True, description="export the model with its task head to ONNX (onnx/model.onnx)")
    quantize_int8: bool = Field(
        True, description="also write onnx/model_int8.onnx (onnxruntime dynamic int8 quantization); needs onnx"
    )
    opset: int = Field(17, ge=14, le=21, description="ONNX opset for torch.onnx.export")
    tie_margin: float = Field(
        1e-4,
        ge=0,
        description="fp32 parity: a position whose two best PyTorch logits lie closer than this "
        "is a tie and not counted as a mismatch",
    )
    int8_tolerance: float = Field(
        0.02,
        ge=0,
        le=1,
        description="int8 parity: the largest allowed drop of the family's headline test "
        "metric (absolute, e.g. 0.02 = 2 points of F1) against PyTorch",
    )
    parity_examples: int | None = Field(
        None, gt=0, description="test features the parity check runs on (the first N); None: all of them"
    )
    latency_examples: int = Field(64, gt=0, le=RESAMPLE_LIMIT, description="examples timed one at a time for p50/p95")
    batch_size: BatchSize = Field(16, description="batch size for parity and for batched throughput")
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads for PyTorch and onnxruntime alike; None: PyTorch's default"
    )
    push_to_hub: str | None = Field(
        None, min_length=3, description="opt-in: a Hub repo id (user/name) to upload the card and artifacts to"
    )
    hub_private: bool = Field(True, description="create the Hub repo as private")
    hub_artifacts: list[Artifact] = Field(
        ["model"], min_length=1, description="what goes to the Hub besides the card: model (safetensors), onnx, int8"
    )


class GateRule(Strict):
    """How far one metric may drop before the gate fails (`tasks.<task>.gate.<metric>`)."""

    max_drop: float | None = Field(
        ge=0, allow_inf_nan=False, description="largest allowed drop; null reports the metric but never gates it"
    )
    relative: bool = Field(False, description="max_drop is a fraction of the old value")
    lower_is_better: bool | None = Field(
        None, description="None: inferred from the name (loss, perplexity are lower-is-better)"
    )
    range: tuple[float | None, float | None] | None = Field(
        None,
        description="[low, high] a valid value lies in (null: open end); None: by name (f1, accuracy... [0, 1])",
    )

    @field_validator("range", mode="before")
    @classmethod
    def _list_as_pair(cls, value: Any) -> Any:
        """YAML writes `[0, 1]` as a list; the strict schema takes a pair as a tuple."""
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _ordered_range(self) -> GateRule:
        low, high = self.range or (None, None)
        if low is not None and high is not None and low > high:
            raise ValueError(f"range must be [low, high] with low <= high (got {[low, high]})")
        return self


class GateParams(Strict):
    """Top-level `gate`: a pinned reference every run is also compared with, so that drops
    each within tolerance of their base cannot add up across pull requests."""

    reference: str | None = Field(None, min_length=1, description="a git tag, branch or commit whose metrics/ pin")
    reference_file: str | None = Field(
        None, min_length=1, description="a JSON file committed at HEAD, {task: {method: metrics}} (--write-reference)"
    )

    @model_validator(mode="after")
    def _one_reference(self) -> GateParams:
        if self.reference and self.reference_file:
            raise ValueError("set reference or reference_file, not both")
        return self


class TaskParams(Strict):
    """The common shape of `tasks.<name>`; families narrow `type` and extend the sections."""

    type: str
    model: ModelParams
    download: DownloadParams
    tokenize: TokenizeParams
    train_full: TrainParams
    train_lora: LoraTrainParams
    evaluate: EvaluateParams
    error_analysis: ErrorAnalysisParams
    export: ExportParams = ExportParams()
    search: SearchParams = SearchParams()
    gate: dict[str, GateRule] = Field(
        default_factory=dict, description="metric -> allowed drop, for reprotune-check; read by no stage"
    )


class PipelineParams(Strict):
    tasks: dict[str, str] = Field(
        min_length=1, description="task name -> its family (tasks.<name>.type); what dvc.yaml builds"
    )


STAGE_SECTIONS = (
    "model",
    "download",
    "tokenize",
    "search",
    "train_full",
    "train_lora",
    "evaluate",
    "error_analysis",
    "export",
)

# Names users bring from HF scripts and peft, mapped to ours for the did-you-mean hint.
HF_NAMES = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "lr": "learning_rate",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "warmup_ratio": "warmup",
    "warmup_steps": "warmup",
    "model_name_or_path": "name_or_path",
    "fp16": "precision",
    "bf16": "precision",
}


_UNION_TAG = re.compile(r"^(int|float|str|bool|none|function-.*|[a-z-]+\[.*\])$")
"""Parts of pydantic's error location that name a union member (`int`, `list[int]`,
`literal[...]`) or a validator, not a key."""


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not (isinstance(part, str) and _UNION_TAG.match(part)))


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk the schema along `loc` to list the keys allowed where an unknown key was found."""
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        annotation = fields[part].annotation
        current = next(
            (arg for arg in getattr(annotation, "__args__", (annotation,)) if hasattr(arg, "model_fields")),
            annotation,
        )
    return sorted(getattr(current, "model_fields", {}))


def explain_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str) -> ReprotuneError:
    """Turn pydantic's report into one line naming the key and what is allowed."""
    errors = exc.errors()
    first = _location(tuple(errors[0]["loc"]))
    # Of the first key's errors, the deepest: for a union (`class_weights: {a: true}`) the
    # member that got furthest names the culprit, not "should be 'none' or 'balanced'".
    err = max(
        (e for e in errors if (_location(tuple(e["loc"])) + ".").startswith(first + ".")),
        key=lambda e: len(_location(tuple(e["loc"]))),
    )
    loc = tuple(err["loc"])
    where = f"{prefix}.{_location(loc)}" if loc else prefix
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        key = str(loc[-1])
        hint = f" (did you mean '{HF_NAMES[key]}'?)" if HF_NAMES.get(key) in allowed else did_you_mean(key, allowed)
        return ReprotuneError(f"{PARAMS_FILE}: unknown key '{where}'{hint}; allowed keys: {', '.join(allowed)}")
    if err["type"] == "missing":
        if len(loc) == 1 and loc[0] in STAGE_SECTIONS:
            return ReprotuneError(
                f"{PARAMS_FILE}: missing section '{where}'; every stage section must be present so DVC can "
                f"track it (write '{loc[0]}: {{}}' to take the defaults)"
            )
        return ReprotuneError(f"{PARAMS_FILE}: missing required key '{where}'")
    got = err.get("input")
    hint = ""
    if err["type"] in ("int_type", "float_type", "bool_type") and isinstance(got, str):
        hint = "; write it without quotes"
    elif err["type"] == "int_type" and isinstance(got, float) and got.is_integer():
        hint = "; write a whole number without a decimal point or exponent"
    return ReprotuneError(f"{PARAMS_FILE}: '{where}': {err['msg']} (got {got!r}){hint}")


def parse_pipeline(raw: Any) -> PipelineParams:
    """The `pipeline` section, with a bad key reported in one line (never a traceback)."""
    try:
        return PipelineParams.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise explain_validation_error(exc, PipelineParams, "pipeline") from exc


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.2 numbers, as DVC reads them: PyYAML (YAML 1.1) reads `2e-5` and `1e8`,
    without a decimal point, as text, which the strict schema would refuse. LibYAML's
    parser where installed: every stage parses params.yaml, and start-up counts."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """YAML as read for params (safe, with YAML 1.2 exponents: `2e-5` is a number)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ReprotuneError(f"{path} not found; run stages from the repository root")
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReprotuneError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ReprotuneError(f"{path} must be a mapping with 'pipeline' and 'tasks'")
    return data

"""What LoRA costs against full fine-tuning on the train stage's path (issue 25): samples/s
and peak memory, each row in a fresh process so both methods start from the same empty
heap (CPU RSS otherwise keeps the previous row's high-water mark), the methods interleaved
and repeated so a shared machine's load falls on all of them alike, medians reported.

Methods: `full`; `lora` as the train stage builds it (reprotune.training.lora.apply_lora,
which folds the adapters' dropout into A, and the frozen base stored in the autocast dtype,
as fit() does); `lora-peft`, the same LoRA with peft's own dropout modules and fp32 frozen
weights, i.e. the stage before issue 25. One row:

    python bench/throughput_lora.py '{"method": "lora", "precision": "bf16", ...}'

prints one JSON line; `python bench/throughput.py --sections lora-cost` runs the set."""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH = Path(__file__).resolve().parent
METHODS = ("full", "lora", "lora-peft")
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
"""glibc: tensors above 64 KiB are mapped and unmapped, so a freed tensor leaves the
resident set and RSS follows the live tensors; with the default (a threshold that grows
up to 32 MiB) freed activations stay on the heap, and a row's RSS varies by ±200 MB from
run to run with where the allocator happened to put them."""


class RssTrace:
    """Resident memory sampled every 10 ms in a thread, with the time of each sample, so
    the peak over any window (the whole run, or the measured steps) can be read after."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss_mb()))
            self._stop.wait(0.01)

    def __enter__(self) -> RssTrace:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self.rss_mb()))

    def peak(self, start: float | None = None, end: float | None = None) -> float:
        window = [mb for t, mb in self.samples if (start is None or t >= start) and (end is None or t <= end)]
        return max(window) if window else 0.0


def unfold_lora_dropout(model: Any) -> None:
    """Undo reprotune's folding: peft's nn.Dropout before a plain Linear A, after peft's own
    cast of the input to the adapter's dtype (the old path)."""
    import torch
    from peft.tuners.lora import LoraLayer

    from reprotune.training.lora import DropoutLoraA

    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, lora_a in module.lora_A.items():
            if isinstance(lora_a, DropoutLoraA):
                module.lora_dropout[name] = torch.nn.Dropout(lora_a.dropout_p)
                lora_a.__class__ = torch.nn.Linear
        module.cast_input_dtype_enabled = True


def model_spec(name: str) -> Any:
    import throughput_train as tt

    return next(spec for spec in tt.REAL_MODELS + tt.CPU_MODELS + tt.SMOKE_MODELS if spec.name == name)


def build(
    name: str,
    method: str,
    precision: str,
    bias: str,
    dropout: float,
    target_modules: str = "auto",
    attention_dropout: float = 0.1,
) -> Any:
    """The model of one row: full, LoRA as the train stage builds it, or `lora-peft` (peft's
    own dropout modules and fp32 frozen weights)."""
    import throughput_train as tt

    from reprotune.core.params import LoraTrainParams
    from reprotune.modeling.precision import resolve, store_frozen_in_autocast_dtype
    from reprotune.training.lora import apply_lora

    model = tt.build_model(model_spec(name), attention_dropout)
    if method == "full":
        return model
    params = LoraTrainParams(bias=bias, dropout=dropout, target_modules=target_modules)  # type: ignore[arg-type]
    model = apply_lora(model, params, "TOKEN_CLS", ("classifier",))
    if method == "lora":
        store_frozen_in_autocast_dtype(model, resolve(precision, "bench precision"))
    else:
        unfold_lora_dropout(model)
    return model


@dataclass
class Row:
    """What one row trains, and how: the model (of `method`, full or lora), the stage's
    TrainingArguments, the data."""

    method: str
    model: Any
    args: Any
    train_set: Any
    tokenizer: Any
    source: str


def prepare_row(spec: dict[str, Any], output_dir: Path) -> Row:
    """Threads, data (warmup + steps batches of WikiANN train, else synthetic), the method's
    model and the train stage's arguments for one row of `spec`."""
    import throughput_train as tt
    import torch
    from throughput import load_tokenizer_ref, training_features

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    count = (spec["warmup"] + spec["steps"]) * spec["batch_size"]
    tokenizer = load_tokenizer_ref(spec["tokenizer"])
    features, source = training_features(Path(spec["data_dir"]), tokenizer, count, "train")
    train_set = tt.repeat_to(features, count).select_columns(tt.columns_for(model_spec(spec["model"])))
    model = build(spec["model"], spec["method"], spec["precision"], spec["bias"], spec["dropout"])
    method = "lora" if spec["method"].startswith("lora") else "full"
    config = tt.RunConfig("fast", method, spec["batch_size"], precision=spec["precision"])
    args = tt.fast_arguments(output_dir, config, spec["warmup"] + spec["steps"])
    return Row(method, model, args, train_set, tokenizer, source)


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Train warmup + steps optimizer steps of one method in this (fresh) process."""
    import throughput_train as tt
    import torch

    load = os.getloadavg()[0]
    batch, warmup, steps = spec["batch_size"], spec["warmup"], spec["steps"]
    output_dir = Path(tempfile.mkdtemp(prefix="reprotune-lora-cost-"))
    try:
        row = prepare_row(spec, output_dir)
        trainer_class, record = tt.timed_trainer(warmup, warmup + steps)
        if tt.cuda():
            torch.cuda.reset_peak_memory_stats()
        with RssTrace() as trace:
            trainer = trainer_class(
                model=row.model,
                args=row.args,
                train_dataset=row.train_set,
                data_collator=tt.collator(row.tokenizer, "fast"),
                processing_class=row.tokenizer,
            )
            trainer.train()
        optimizer = trainer.optimizer
        state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if t.dim())
        seconds = record["end"] - record["start"]
        result = {
            "model": spec["model"],
            "method": spec["method"],
            "precision": spec["precision"],
            "batch_size": batch,
            "lora_bias": spec["bias"] if row.method == "lora" else None,
            "lora_dropout": spec["dropout"] if row.method == "lora" else None,
            "samples_per_s": round(sum(record["samples"][warmup:]) / seconds, 2),
            "step_time_ms": round(1000 * seconds / steps, 1),
            "peak_rss_mb": round(trace.peak(), 1),
            "steady_rss_mb": round(trace.peak(record["start"], record["end"]), 1),
            "trainable_params": sum(p.numel() for p in row.model.parameters() if p.requires_grad),
            "optimizer_state_mb": round(state / 2**20, 1),
            "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(),
            "data": row.source,
        }
        if tt.cuda():
            result["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return result
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def summarize(rows: list[dict[str, Any]], precision: str, repeats: int) -> dict[str, Any]:
    """Medians per method: samples/s from the speed runs (glibc's default allocator, as the
    train stage runs), memory from the memory runs; LoRA/full ratios and savings paired
    within each repeat (the rows of one repeat ran back to back, under about the same load)."""
    out: dict[str, Any] = {"precision": precision, "repeats": repeats}
    speed_rows = [r for r in rows if r["precision"] == precision and r["run"] == "speed"]
    memory_rows = [r for r in rows if r["precision"] == precision and r["run"] == "memory"]

    def of(kind: list[dict[str, Any]], method: str, rep: int | None = None) -> list[dict[str, Any]]:
        return [r for r in kind if r["method"] == method and (rep is None or r["repeat"] == rep)]

    for method in METHODS:
        speeds = [r["samples_per_s"] for r in of(speed_rows, method)]
        memory = of(memory_rows, method)
        if not speeds and not memory:
            continue
        out[method] = {
            "samples_per_s": median(speeds) if speeds else None,
            "samples_per_s_range": [min(speeds), max(speeds)] if speeds else None,
            "peak_rss_mb": median([r["peak_rss_mb"] for r in memory]) if memory else None,
            "steady_rss_mb": median([r["steady_rss_mb"] for r in memory]) if memory else None,
        }
    for method in METHODS[1:]:
        speed = [
            lora["samples_per_s"] / full["samples_per_s"]
            for rep in range(repeats)
            for full in of(speed_rows, "full", rep)
            for lora in of(speed_rows, method, rep)
        ]
        pairs = [
            (full, lora)
            for rep in range(repeats)
            for full in of(memory_rows, "full", rep)
            for lora in of(memory_rows, method, rep)
        ]
        peak = [full["peak_rss_mb"] - lora["peak_rss_mb"] for full, lora in pairs]
        steady = [full["steady_rss_mb"] - lora["steady_rss_mb"] for full, lora in pairs]
        out[f"{method}_vs_full"] = {
            "speed_ratio_median": median(speed) if speed else None,
            "speed_ratio_range": [round(min(speed), 3), round(max(speed), 3)] if speed else None,
            "peak_saving_mb_median": median(peak) if peak else None,
            "steady_saving_mb_median": median(steady) if steady else None,
            "steady_saving_mb_range": [round(min(steady), 1), round(max(steady), 1)] if steady else None,
        }
    mine = speed_rows + memory_rows
    loads = [r["load_before"] for r in mine] + [r["load_after"] for r in mine]
    out["load_1min_range"] = [min(loads), max(loads)] if loads else None
    return out


def lora_cost(
    precisions: list[str],
    repeats: int,
    spec: dict[str, Any],
    save: Any,
    result: dict[str, Any],
) -> list[dict[str, Any]]:
    """Each repeat runs every method once per precision, in an order rotated per repeat,
    twice: a speed run with glibc's default allocator (as the train stage runs) and a
    memory run with ALLOCATOR_ENV (mapping every tensor costs page faults, so no timing)."""
    rows: list[dict[str, Any]] = result.setdefault("lora_cost_rows", [])
    for rep in range(repeats):
        for precision in precisions:
            order = METHODS[rep % len(METHODS) :] + METHODS[: rep % len(METHODS)]
            for run, env in (("speed", {}), ("memory", ALLOCATOR_ENV)):
                for method in order:
                    row_spec = {**spec, "method": method, "precision": precision}
                    what = f"lora-cost {precision} {method} ({run} run)"
                    print(f"repeat {rep + 1}/{repeats} {what} ...", flush=True)
                    done = subprocess.run(
                        [sys.executable, str(BENCH / "throughput_lora.py"), json.dumps(row_spec)],
                        env={**os.environ, **env},
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                    if done.returncode != 0 or not lines:
                        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                        result.setdefault("errors", []).append(f"{what}: {tail}")
                        print(f"error: {what}: {tail}", flush=True)
                        continue
                    rows.append({**json.loads(lines[-1]), "repeat": rep, "run": run, "allocator_env": env})
                    save()
    summary = [summarize(rows, precision, repeats) for precision in precisions]
    result["lora_cost"] = summary
    save()
    return summary


def main() -> int:
    for entry in (str(BENCH.parent), str(BENCH)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = run_row(json.loads(sys.argv[1]))
    print(json.dumps(row, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

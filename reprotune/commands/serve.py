"""An HTTP server for a trained model: FastAPI on uvicorn, with batching across requests.

    reprotune-serve wnut16 --method lora --format onnx
    curl -s localhost:8000/predict -d '{"records": [{"text": "Obama visited Paris"}]}'

POST /predict takes `{"records": [record, ...]}`, or one record alone; a record is an
object with the task's fields, or a plain string for the first field. It answers
`{"predictions": [...]}`, one per record (NER: `"windows"` says how many windows a long
text took). GET /health answers what is loaded; /openapi.json and /docs describe the API.
Errors are JSON `{"error": "..."}`: 400 (malformed input, a text refused as too long), 401
(token), 404, 405, 408 (body not in by the deadline), 413 (body or record count over the
limits), 503 (no answer by the deadline), 500 (no traceback).

Requests arriving within --max-wait-ms of each other share forward passes (at most
--max-batch records). It binds to 127.0.0.1 unless --host says otherwise. With the
environment variable named by --token-env (default REPROTUNE_SERVE_TOKEN) set, POST
/predict needs `Authorization: Bearer <token>`. SIGINT/SIGTERM stop it gracefully:
no new connections, running requests answered (up to the deadline)."""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from typing import TYPE_CHECKING

from reprotune.core.errors import ReprotuneError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from reprotune.serving.app import ServeSettings

TOKEN_ENV = "REPROTUNE_SERVE_TOKEN"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def listen(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: a free one), so errors are one line and tests learn the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted sockets inherit it: without, a keep-alive response's body waits ~40 ms (Nagle + delayed ACK)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ReprotuneError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def uvicorn_server(app: FastAPI, settings: ServeSettings, quiet: bool = False) -> uvicorn.Server:
    """uvicorn with a deep listen backlog and a graceful shutdown as long as the request deadline."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning" if quiet else "info",
        access_log=not quiet,
        backlog=2048,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=max(1, math.ceil(settings.deadline_s)),
        server_header=False,
    )
    return uvicorn.Server(config)


def main(argv: list[str]) -> str | None:
    parser = argparse.ArgumentParser(
        prog="reprotune-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", help="a task name from params.yaml")
    parser.add_argument("--method", default="full", choices=["full", "lora"])
    parser.add_argument("--format", default="checkpoint", choices=["checkpoint", "onnx"])
    parser.add_argument("--int8", action="store_true", help="with --format onnx: the int8 model")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-bytes", type=int, default=1 << 20, help="largest request body")
    parser.add_argument("--max-records", type=int, default=64, help="most records per request")
    parser.add_argument("--max-batch", type=int, default=32, help="most records per forward pass, across requests")
    parser.add_argument(
        "--max-wait-ms", type=float, default=20.0, help="how long a batch waits for requests still being read"
    )
    parser.add_argument("--deadline-s", type=float, default=30.0, help="whole-request time limit")
    parser.add_argument("--long-inputs", default="window", choices=["window", "refuse"], help="texts over max_length")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: this process's CPUs)")
    parser.add_argument("--token-env", default=TOKEN_ENV, help="environment variable holding the bearer token")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    if args.max_batch < 1 or args.max_records < 1 or args.max_wait_ms < 0 or args.deadline_s <= 0:
        raise ReprotuneError(
            "--max-batch and --max-records must be at least 1, --max-wait-ms at least 0, --deadline-s above 0"
        )
    os.environ["TQDM_DISABLE"] = "1"  # no progress bar per request in the server log
    from reprotune.serving import loading
    from reprotune.serving.app import ServeSettings, create_app
    from reprotune.serving.online import OnlinePredictor

    sock = listen(args.host, args.port)  # before the model loads: a taken port fails at once
    threads = args.threads or available_cpus()  # one batch runs at a time: it may use every core
    try:
        loaded = loading.load(args.task, args.method, args.format, args.params, int8=args.int8, threads=threads)
    except BaseException:
        sock.close()
        raise
    predictor = OnlinePredictor(loaded, args.long_inputs, args.max_batch)
    settings = ServeSettings(
        max_bytes=args.max_bytes,
        max_records=args.max_records,
        max_batch=args.max_batch,
        max_wait_s=args.max_wait_ms / 1000,
        deadline_s=args.deadline_s,
        token=os.environ.get(args.token_env) or None,
    )
    server = uvicorn_server(create_app(predictor, settings), settings, args.quiet)
    print(
        f"reprotune-serve: {args.task} {args.method} ({args.format}{', int8' if args.int8 else ''}) on "
        f"http://{args.host}:{sock.getsockname()[1]} (POST /predict, GET /health, /docs; "
        f"token {'required' if settings.token else 'off'}; Ctrl-C stops)",
        file=sys.stderr,
    )
    server.run(sockets=[sock])
    return None


def console() -> None:
    from reprotune.core.cli import run_stage

    run_stage(main)  # quiets the libraries first


if __name__ == "__main__":
    console()

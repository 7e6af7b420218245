"""A small HTTP server around `predict` (stdlib only).

    reprotune-serve wnut16 --method lora --format onnx
    curl -s localhost:8000/predict -d '{"records": [{"text": "Obama visited Paris"}]}'

POST /predict takes a JSON object: `{"records": [record, ...]}`, or one record alone;
a record is an object with the task's fields, or a plain string for the first field.
It answers `{"predictions": [...]}`, one per record. GET /health answers what is loaded.
Errors are JSON `{"error": "..."}` with 400 (malformed input), 404, 405, 411 (no
Content-Length), 413 (body or record count over the limits) or 500 (no traceback).
It binds to 127.0.0.1 unless --host says otherwise; it has no authentication."""

from __future__ import annotations

import argparse
import json
import os
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reprotune.core.errors import ReprotuneError

MAX_BYTES = 1 << 20
MAX_RECORDS = 64
SOCKET_TIMEOUT_S = 30


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_records(body: bytes, fields: tuple[str, ...], max_records: int) -> list[dict[str, Any]]:
    """The request's records, checked; RequestError names what is wrong."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, "the body is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(data, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, 'send a JSON object: {"records": [...]} or one record')
    items = data["records"] if "records" in data else [data]
    if not isinstance(items, list):
        raise RequestError(HTTPStatus.BAD_REQUEST, "'records' must be a list")
    if not items:
        raise RequestError(HTTPStatus.BAD_REQUEST, "'records' is empty")
    if len(items) > max_records:
        raise RequestError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{len(items)} records; at most {max_records} per request"
        )
    records = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, str):
            item = {fields[0]: item}
        if not isinstance(item, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"record {number} must be an object or a string")
        missing = [field for field in fields if field not in item]
        if missing:
            raise RequestError(
                HTTPStatus.BAD_REQUEST, f"record {number} lacks field '{missing[0]}' (needs: {', '.join(fields)})"
            )
        wrong = [field for field in fields if not isinstance(item[field], str)]
        if wrong:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"record {number}: '{wrong[0]}' must be a string")
        records.append(item)
    return records


def make_server(
    predictor: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_bytes: int = MAX_BYTES,
    max_records: int = MAX_RECORDS,
    quiet: bool = False,
) -> ThreadingHTTPServer:
    """A server calling `predictor(records)`; `predictor.fields` and `.description` describe it.
    Port 0 picks a free port (server.server_address has it)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "reprotune-serve"
        sys_version = ""
        timeout = SOCKET_TIMEOUT_S
        protocol_version = "HTTP/1.1"

        def _send(self, status: HTTPStatus, payload: dict[str, Any], close: bool = False) -> None:
            body = (json.dumps(payload, ensure_ascii=False) + "\n").encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str, close: bool = False) -> None:
            self._send(status, {"error": message}, close=close)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?")[0] == "/health":
                self._send(HTTPStatus.OK, {"status": "ok", **getattr(predictor, "description", {})})
            elif self.path.split("?")[0] == "/predict":
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /predict")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no endpoint {self.path}; try GET /health or POST /predict")

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/predict":
                self._error(HTTPStatus.NOT_FOUND, f"no endpoint {self.path}; try POST /predict", close=True)
                return
            length_header = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding") or length_header is None:
                self._error(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length", close=True)
                return
            try:
                length = int(length_header)
                if length < 0:
                    raise ValueError
            except ValueError:
                self._error(HTTPStatus.BAD_REQUEST, "Content-Length is not a number", close=True)
                return
            if length > max_bytes:
                self._error(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body has {length} bytes; at most {max_bytes}", close=True
                )
                return
            body = self.rfile.read(length)
            try:
                records = parse_records(body, tuple(predictor.fields), max_records)
                predictions = predictor(records)
            except RequestError as exc:
                self._error(exc.status, str(exc))
                return
            except ReprotuneError as exc:
                self._error(HTTPStatus.BAD_REQUEST, str(exc))
                return
            except Exception as exc:  # never a traceback to the client; one line to the log
                print(f"reprotune-serve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the server log")
                return
            self._send(HTTPStatus.OK, {"predictions": predictions})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            if not quiet:
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str]) -> str | None:
    parser = argparse.ArgumentParser(
        prog="reprotune-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", help="a task name from params.yaml")
    parser.add_argument("--method", default="full", choices=["full", "lora"])
    parser.add_argument(
        "--format",
        default="checkpoint",
        choices=["checkpoint", "onnx"],
        help="checkpoint: the trained model; onnx: the export stage's ONNX model",
    )
    parser.add_argument("--int8", action="store_true", help="with --format onnx: the int8 model")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="largest request body")
    parser.add_argument("--max-records", type=int, default=MAX_RECORDS, help="most records per request")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"  # no progress bar per request in the server log
    from datasets.utils.logging import disable_progress_bar

    from reprotune.export.runtime import load_predictor

    disable_progress_bar()

    predictor = load_predictor(args.task, args.method, args.format, args.params, int8=args.int8)
    try:
        server = make_server(predictor, args.host, args.port, args.max_bytes, args.max_records)
    except OSError as exc:
        raise ReprotuneError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    port = server.server_address[1]
    print(
        f"reprotune-serve: {args.task} {args.method} ({args.format}) on http://{args.host}:{port} "
        "(POST /predict, GET /health; Ctrl-C stops)",
        file=sys.stderr,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return None


def console() -> None:
    from reprotune.core.cli import quiet_libraries, run_stage

    quiet_libraries()
    run_stage(main)


if __name__ == "__main__":
    console()

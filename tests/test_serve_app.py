"""reprotune-serve's app on a real uvicorn server on 127.0.0.1 (a free port, a thread,
bounded waits): JSON 4xx for every malformed request, the bearer token, a trickling client
cut at the deadline while another is served, batching across concurrent requests (the
batch sizes the model saw), the OpenAPI schema, graceful shutdown, and the tiny NER model
served from PyTorch, ONNX and int8 ONNX."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reprotune.commands.serve import listen, uvicorn_server
from reprotune.serving.app import ServeSettings, create_app
from reprotune.serving.online import Prepared
from reprotune.serving.records import RecordError


class EchoPredictor:
    """Answers each record's length; `run` calls (the model's batches) are recorded."""

    fields = ("text",)
    description = {"task": "echo", "method": "lora", "format": "onnx"}

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.runs: list[int] = []

    def prepare(self, record: dict[str, Any]) -> Prepared:
        if record["text"] == "long":
            raise RecordError("the text has 900 sub-tokens; the model takes at most 64")
        return Prepared(record=record)

    def run(self, prepared: list[Prepared]) -> list[dict[str, Any]]:
        self.runs.append(len(prepared))
        if any(p.record["text"] == "boom" for p in prepared):
            raise RuntimeError("secret internal detail")
        time.sleep(self.delay_s)
        return [{"text": p.record["text"], "length": len(p.record["text"])} for p in prepared]


@pytest.fixture()
def serve() -> Iterator[Callable[..., tuple[int, Any, Any]]]:
    """Start an app on a free loopback port in a thread; stopped (gracefully) after the test."""
    started: list[tuple[Any, threading.Thread]] = []

    def start(predictor: Any, **settings: Any) -> tuple[int, Any, Any]:
        sock = listen("127.0.0.1", 0)
        app = create_app(predictor, ServeSettings(**settings))
        server: Any = uvicorn_server(app, ServeSettings(**settings), quiet=True)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.02)
        assert server.started
        started.append((server, thread))
        return sock.getsockname()[1], app, server

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive()


def request(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), raw[:200]
        return response.status, json.loads(raw.decode())
    finally:
        connection.close()


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_valid_and_malformed_requests_get_json_answers(serve) -> None:
    port, _, _ = serve(EchoPredictor(), max_bytes=4096, max_records=3)
    assert request(port, "GET", "/health") == (200, {"status": "ok", **EchoPredictor.description})
    assert request(port, "POST", "/predict", {"text": "hi"}) == (200, {"predictions": [{"text": "hi", "length": 2}]})
    status, body = request(port, "POST", "/predict", {"records": [{"text": "a"}, "bc"]})
    assert status == 200 and [p["length"] for p in body["predictions"]] == [1, 2]
    bad = {
        b"{not json": (400, "not JSON"),
        b"": (400, "empty"),
        b"[1, 2]": (400, "JSON object"),
        b"\xff\xfe": (400, "UTF-8"),
        b'{"text": "\\ud800"}': (400, "lone surrogate"),
        b"[" * 100_000 + b"]" * 100_000: (413, "at most 4096"),
        b'{"a":' * 500 + b"1" + b"}" * 500: (400, "nested"),
        json.dumps({"records": []}).encode(): (400, "empty"),
        json.dumps({"records": {"text": "x"}}).encode(): (400, "must be a list"),
        json.dumps({"records": [{"txt": "x"}]}).encode(): (400, "lacks field 'text'"),
        json.dumps({"records": [{"text": 3}]}).encode(): (400, "must be a string"),
        json.dumps({"records": [7]}).encode(): (400, "object or a string"),
        json.dumps({"records": ["a"] * 4}).encode(): (413, "at most 3"),
        json.dumps({"text": "long"}).encode(): (400, "record 1: the text has 900 sub-tokens"),
        json.dumps({"text": "boom"}).encode(): (500, "internal error"),
    }
    for payload, (want_status, want_text) in bad.items():
        status, body = request(port, "POST", "/predict", payload)
        assert status == want_status and want_text in body["error"], (payload[:40], status, body)
        assert "Traceback" not in body["error"] and "secret" not in body["error"]
    assert request(port, "GET", "/nowhere")[0] == 404
    assert request(port, "GET", "/predict")[0] == 405
    assert request(port, "PUT", "/predict", {"text": "x"})[0] == 405
    assert request(port, "POST", "/health", {"text": "x"})[0] == 405
    # TLS bytes instead of HTTP: uvicorn's parser refuses them with a 400, no stack trace
    answer = raw_exchange(port, bytes.fromhex("160301020001000200030300") + b"\x00" * 64)
    assert answer.startswith(b"HTTP/1.1 400") and b"Traceback" not in answer
    # a body over the limit is refused from its Content-Length, before it is read
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Length", str(10 * 4096))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and "at most 4096" in json.loads(response.read())["error"]
    finally:
        connection.close()


def test_deep_nesting_and_huge_numbers_within_the_size_limit_are_400(serve) -> None:
    port, _, _ = serve(EchoPredictor(), max_bytes=1 << 20)
    for payload, text in (
        (b"[" * 100_000 + b"]" * 100_000, "nested"),
        (b'{"text": "x", "n": ' + b"7" * 5000 + b"}", "not usable JSON"),
    ):
        status, body = request(port, "POST", "/predict", payload)
        assert status == 400 and text in body["error"], body


@pytest.mark.serial  # timings: no other test on the CPU
def test_keep_alive_answers_are_not_held_back_by_nagle(serve) -> None:
    """Without TCP_NODELAY a keep-alive response's body waits for the client's delayed ACK (~40 ms)."""
    port, _, _ = serve(EchoPredictor())
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    seconds = []
    for _ in range(15):
        begun = time.perf_counter()
        connection.request("GET", "/health")
        connection.getresponse().read()
        seconds.append(time.perf_counter() - begun)
    connection.close()
    assert sorted(seconds)[7] < 0.02, seconds


@pytest.mark.serial  # timings: no other test on the CPU
def test_a_lone_request_does_not_wait_for_company(serve) -> None:
    """max_wait applies only while other requests are on their way."""
    predictor = EchoPredictor()
    port, _, _ = serve(predictor, max_wait_s=0.5)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    seconds = []
    for _ in range(5):
        begun = time.perf_counter()
        connection.request("POST", "/predict", body=b'{"text": "alone"}')
        connection.getresponse().read()
        seconds.append(time.perf_counter() - begun)
    connection.close()
    assert sorted(seconds)[2] < 0.25 and predictor.runs == [1] * 5, (seconds, predictor.runs)


def test_bearer_token_is_enforced_when_set(serve) -> None:
    port, _, _ = serve(EchoPredictor(), token="s3cret")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        status, body = request(port, "POST", "/predict", {"text": "hi"}, headers)
        assert status == 401 and "Bearer" in body["error"]
    assert request(port, "POST", "/predict", {"text": "hi"}, {"Authorization": "Bearer s3cret"})[0] == 200
    assert request(port, "GET", "/health")[0] == 200


@pytest.mark.serial  # timings: no other test on the CPU
def test_a_trickling_client_is_cut_at_the_deadline_while_others_are_served(serve) -> None:
    port, _, _ = serve(EchoPredictor(), deadline_s=1.0)
    answer: dict[str, Any] = {}

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            started = time.monotonic()
            sock.settimeout(0.2)
            data = b""
            # Trickle for most of the deadline, then stop: a byte sent after the server has
            # closed would draw a reset that can discard the 408 before it is read.
            while time.monotonic() - started < 0.7 and not data:
                try:
                    sock.sendall(b" ")
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
            sock.settimeout(5)
            try:
                data = data or sock.recv(65536)
                answer["seconds"] = time.monotonic() - started
                while data and (chunk := sock.recv(65536)):  # the rest, until the server closes
                    data += chunk
            finally:
                answer["data"] = data

    thread = threading.Thread(target=trickle)
    thread.start()
    time.sleep(0.2)
    served_at = time.monotonic()
    assert request(port, "POST", "/predict", {"text": "meanwhile"})[0] == 200
    assert time.monotonic() - served_at < 0.5
    thread.join(timeout=10)
    assert answer["data"].startswith(b"HTTP/1.1 408") and b"deadline" in answer["data"]
    assert 0.9 < answer["seconds"] < 2.5


@pytest.mark.serial  # timings: no other test on the CPU
def test_concurrent_requests_share_batches(serve) -> None:
    predictor = EchoPredictor(delay_s=0.3)
    port, app, _ = serve(predictor, max_batch=4, max_wait_s=0.05)
    texts = [f"t{i}" for i in range(9)]
    with ThreadPoolExecutor(9) as pool:
        answers = list(pool.map(lambda t: request(port, "POST", "/predict", {"text": t}), texts))
    assert [body["predictions"][0]["text"] for _, body in answers] == texts
    assert predictor.runs == app.state.batcher.batches
    assert sum(predictor.runs) == 9 and max(predictor.runs) <= 4
    assert len(predictor.runs) <= 4, f"9 concurrent requests ran as {predictor.runs}"


@pytest.mark.serial  # timings: no other test on the CPU
def test_a_failing_request_does_not_fail_its_batch_mates(serve) -> None:
    predictor = EchoPredictor(delay_s=0.2)
    port, _, _ = serve(predictor, max_batch=8, max_wait_s=0.1)
    texts = ["a", "boom", "c", "d"]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda t: request(port, "POST", "/predict", {"text": t}), texts))
    assert [status for status, _ in answers] == [200, 500, 200, 200]
    assert [body["predictions"][0]["text"] for status, body in answers if status == 200] == ["a", "c", "d"]
    assert max(predictor.runs) > 1, predictor.runs  # they were batched, then run alone after the failure


def test_openapi_schema_describes_predict(serve) -> None:
    port, _, _ = serve(EchoPredictor())
    status, schema = request(port, "GET", "/openapi.json")
    assert status == 200 and set(schema["paths"]) >= {"/predict", "/health"}
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "records" in body["properties"]


@pytest.mark.serial  # timings: no other test on the CPU
def test_graceful_shutdown_answers_the_running_request(serve) -> None:
    port, _, server = serve(EchoPredictor(delay_s=0.5))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(request, port, "POST", "/predict", {"text": "slow"})
        time.sleep(0.2)
        server.should_exit = True  # what SIGTERM / Ctrl-C do
        assert pending.result(timeout=10) == (200, {"predictions": [{"text": "slow", "length": 4}]})
    for _ in range(100):
        if not server.started or server.should_exit:
            break
        time.sleep(0.05)
    with pytest.raises(OSError):
        time.sleep(0.5)
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# the tiny NER model behind the app ------------------------------------------------------
@pytest.fixture(scope="module")
def ner_project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from test_predict_cli import build_project

    root = tmp_path_factory.mktemp("serve-ner")
    build_project(root, tiny_model_dir)
    return root


@pytest.mark.parametrize("fmt", ["checkpoint", "onnx", "int8"])
def test_ner_model_batched_across_requests_predicts_as_alone(serve, ner_project, monkeypatch, fmt) -> None:
    from test_predict_cli import TEXTS

    from reprotune.serving import loading
    from reprotune.serving.online import OnlinePredictor

    monkeypatch.chdir(ner_project)
    if fmt != "checkpoint":
        export_onnx_folder(ner_project)
    loaded = loading.load(
        "tiny", "full", "checkpoint" if fmt == "checkpoint" else "onnx", int8=fmt == "int8", threads=1
    )
    predictor = OnlinePredictor(loaded, max_batch=8)
    alone = [predictor([{"text": text}])[0] for text in TEXTS * 2]
    predictor.batch_sizes.clear()
    port, app, _ = serve(predictor, max_batch=8, max_wait_s=0.2)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda t: request(port, "POST", "/predict", {"text": t}), TEXTS * 2))
    batched = [body["predictions"][0] for _, body in answers]
    if fmt == "int8":
        # onnxruntime's dynamic int8 scales activations per batch tensor, so a record's scores
        # move with its batch-mates (up to 0.11 on this tiny model); the entities must not
        spans = [[(e["start"], e["end"], e["type"]) for e in p["entities"]] for p in batched]
        assert spans == [[(e["start"], e["end"], e["type"]) for e in p["entities"]] for p in alone]
        scores = [e["score"] for p in batched for e in p["entities"]]
        assert scores == pytest.approx([e["score"] for p in alone for e in p["entities"]], abs=0.15)
    else:
        assert batched == alone
    assert max(predictor.batch_sizes) > 1 and sum(predictor.batch_sizes) == 6, predictor.batch_sizes
    assert request(port, "GET", "/health")[1]["format"] == ("checkpoint" if fmt == "checkpoint" else "onnx")


def export_onnx_folder(root: Path) -> None:
    """models/tiny/export-full as the export stage leaves it: ONNX, int8, tokenizer, config, reprotune.json."""
    import shutil

    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from reprotune.export.onnx import export_onnx, quantize_int8

    folder = root / "models/tiny/export-full"
    if (folder / "onnx" / "model_int8.onnx").is_file():
        return
    source = root / "models/tiny/full"
    model = AutoModelForTokenClassification.from_pretrained(str(source)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(json.loads((source / "reprotune.json").read_text())["base_model"]))
    export_onnx(model, tokenizer, folder / "onnx" / "model.onnx", opset=17)
    quantize_int8(folder / "onnx" / "model.onnx", folder / "onnx" / "model_int8.onnx")
    tokenizer.save_pretrained(str(folder))
    model.config.save_pretrained(str(folder))
    shutil.copy(source / "reprotune.json", folder / "reprotune.json")


def test_serve_command_starts_enforces_its_token_and_stops_on_sigterm(ner_project: Path) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys

    env = {**os.environ, "REPROTUNE_SERVE_TOKEN": "t0ken", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "reprotune.commands.serve", "tiny", "--port", "0", "--quiet", "--max-wait-ms", "1"]
    process = subprocess.Popen(command, cwd=ner_project, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # the start line, after the model has loaded
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match and "token required" in line, line
        port = int(match.group(1))
        for _ in range(100):  # uvicorn starts serving just after the line
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        assert request(port, "GET", "/health")[1]["task"] == "tiny"
        assert request(port, "POST", "/predict", {"text": "Obama visited Paris"})[0] == 401
        status, body = request(port, "POST", "/predict", {"text": "Obama"}, {"Authorization": "Bearer t0ken"})
        assert status == 200 and body["predictions"][0]["windows"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_load_benchmark_client_is_bounded_and_counts_every_request(serve) -> None:
    """bench/serve_load.py's client against the echo app: stops at its request budget."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import serve_load

    port, _, _ = serve(EchoPredictor())
    row = serve_load.load(port, ["a", "bb"], clients=4, max_requests=20, seconds=10)
    assert row["requests"] == 20 and row["failed"] == 0 and row["clients"] == 4
    assert 0 < row["p50_ms"] <= row["p95_ms"] and row["requests_per_s"] > 0

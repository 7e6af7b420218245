"""The HTTP side of `reprotune-serve`: a FastAPI app (run by uvicorn) around a predictor
with `fields`, `description`, `prepare(record)` and `run(prepared)` (serving.online).

uvicorn parses HTTP, keeps the listen backlog and shuts down gracefully; FastAPI routes,
answers wrong methods and paths, and writes the OpenAPI schema (/openapi.json, /docs).
This module adds what neither has: the JSON error shape, body and record limits, a
whole-request deadline (a client trickling its body is cut, not waited on forever), an
optional bearer token, and the batcher (serving.batcher) between requests and the model."""

from __future__ import annotations

import asyncio
import hmac
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from reprotune.core.errors import ReprotuneError
from reprotune.serving.batcher import Batcher
from reprotune.serving.records import RecordError, parse_json, to_record


@dataclass(frozen=True)
class ServeSettings:
    max_bytes: int = 1 << 20
    """Largest request body."""
    max_records: int = 64
    """Most records in one request."""
    max_batch: int = 32
    """Most records the model runs at once, merged across requests."""
    max_wait_s: float = 0.020
    """How long a batch waits for more requests after its first one."""
    deadline_s: float = 30.0
    """Whole-request limit, from the first body byte awaited to the answer."""
    token: str | None = None
    """When set, POST /predict needs `Authorization: Bearer <token>`."""


class Failure(Exception):
    """A request refused with `status` and a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class PredictRequest(BaseModel):
    """`{"records": [...]}`, each an object with the task's fields or a string for the first
    field; one record alone (without "records") is accepted too."""

    records: list[dict[str, str] | str] = Field(min_length=1)


class PredictResponse(BaseModel):
    predictions: list[dict[str, Any]]


class ErrorResponse(BaseModel):
    error: str


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) from its Content-Length or once it grows past max_bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Failure(400, "Content-Length is not a number")
        if int(declared) > max_bytes:
            raise Failure(413, f"the body has {int(declared)} bytes; at most {max_bytes}")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Failure(413, f"the body has over {max_bytes} bytes; at most {max_bytes}")
        parts.append(chunk)
    return b"".join(parts)


def parse_request(body: bytes, fields: tuple[str, ...], max_records: int) -> list[dict[str, Any]]:
    if not body.strip():
        raise Failure(400, 'the body is empty; send {"records": [...]}')
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Failure(400, f"the body is not UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start})") from None
    try:
        data = parse_json(text)
    except RecordError as exc:
        raise Failure(400, f"the body is {exc}" if str(exc).startswith("not") else f"the body: {exc}") from None
    if not isinstance(data, dict):
        raise Failure(400, 'send a JSON object: {"records": [...]} or one record')
    items = data["records"] if "records" in data else [data]
    if not isinstance(items, list):
        raise Failure(400, "'records' must be a list")
    if not items:
        raise Failure(400, "'records' is empty")
    if len(items) > max_records:
        raise Failure(413, f"{len(items)} records; at most {max_records} per request")
    records = []
    for number, item in enumerate(items, start=1):
        try:
            records.append(to_record(item, fields))
        except RecordError as exc:
            raise Failure(400, f"record {number}: {exc}") from None
    return records


def check_token(request: Request, token: str | None) -> None:
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Failure(401, "send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})


def create_app(predictor: Any, settings: ServeSettings) -> FastAPI:
    """The app; `app.state.batcher.batches` lists the records of every batch the model ran."""
    batcher = Batcher(predictor.run, settings.max_batch, settings.max_wait_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.close()  # uvicorn has stopped taking requests and let running ones end

    app = FastAPI(
        title="reprotune-serve",
        description='Predictions of a reprotune model. Errors are JSON objects `{"error": "..."}`.',
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    app.state.batcher = batcher
    fields = tuple(predictor.fields)

    @app.exception_handler(Failure)
    async def _failure(_: Request, exc: Failure) -> JSONResponse:
        headers = {**exc.headers, "Connection": "close"} if exc.status in (408, 413) else exc.headers
        return error(exc.status, str(exc), headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, "invalid request")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        print(f"reprotune-serve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return error(500, "internal error; see the server log")

    @app.get("/health", summary="What is loaded; no token needed")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **predictor.description}

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={code: {"model": ErrorResponse} for code in (400, 401, 408, 413, 503)},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
        summary="Predictions for records, one per record",
    )
    async def predict(request: Request) -> JSONResponse:
        started = time.monotonic()
        check_token(request, settings.token)
        batcher.incoming += 1
        try:
            try:
                body = await asyncio.wait_for(read_body(request, settings.max_bytes), settings.deadline_s)
            except asyncio.TimeoutError:
                raise Failure(408, f"the body did not arrive within the {settings.deadline_s:g} s deadline") from None
            records = parse_request(body, fields, settings.max_records)
            prepared = await run_in_threadpool(prepare_all, predictor, records)
        finally:
            batcher.incoming -= 1
        try:
            left = settings.deadline_s - (time.monotonic() - started)
            predictions = await asyncio.wait_for(batcher.submit(prepared), max(left, 0.001))
        except asyncio.TimeoutError:
            raise Failure(503, f"no answer within the {settings.deadline_s:g} s deadline; try again") from None
        except Failure:
            raise
        except ReprotuneError as exc:
            raise Failure(400, str(exc)) from None
        except Exception as exc:  # never a traceback to the client; one line to the log
            print(f"reprotune-serve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            raise Failure(500, "internal error; see the server log") from None
        return JSONResponse({"predictions": predictions})

    return app


def prepare_all(predictor: Any, records: list[dict[str, Any]]) -> list[Any]:
    prepared = []
    for number, record in enumerate(records, start=1):
        try:
            prepared.append(predictor.prepare(record))
        except (RecordError, ReprotuneError) as exc:
            raise Failure(400, f"record {number}: {exc}") from None
        except Exception as exc:  # a bug, not the client's mistake: one line to the log
            print(f"reprotune-serve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            raise Failure(500, "internal error; see the server log") from None
    return prepared

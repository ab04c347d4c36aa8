"""HTTP plumbing shared by the routes: JSON responses, the body size limit, error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from garagebook.errors import (
    DatabaseUnavailable,
    DomainError,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    http_status,
)
from garagebook.logs import log_request, request_id_of
from garagebook.metrics import record_request

log = logging.getLogger(__name__)


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = (
        content
        if isinstance(content, bytes)
        else orjson.dumps(
            content, option=orjson.OPT_NON_STR_KEYS
        )  # column names are str subclasses
    )
    return Response(body, status_code, headers, media_type="application/json")


def error_response(error: DomainError) -> Response:
    if isinstance(error, DatabaseUnavailable):
        # The answer says only "try again"; the operator needs to know why: the pool's turn
        # timed out, the server refused or is shutting down, too many connections.
        cause = error.__cause__
        log.warning(
            "database unavailable: %s",
            f"{type(cause).__name__}: {cause}"[:500] if cause is not None else "no cause",
        )
    return json_response(error.body(), http_status(error), error.headers())


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # each error's data fields, e.g. rejected_by

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: {"error": {"code": "...", "message": "...", ...}}."""

    error: ErrorDetail


_STATUS_TEXT = {
    401: "No admin token",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict (the time is taken, the booking already cancelled, …)",
    413: "Body too large",
    415: "The body is not sent as application/json",
    422: "Invalid request",
    429: "Rate limited (see Retry-After)",
    503: "Database unavailable, or the server is restarting: retry",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route's possible errors, all in the one error shape."""
    return {
        status: {"model": ErrorBody, "description": _STATUS_TEXT[status]} for status in statuses
    }


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `openapi_extra=` for a route that parses its JSON body itself (strictly, with
    `model`), so the schema still says what it takes. See `document_bodies`."""
    reference = {"$ref": f"#/components/schemas/{model.__name__}"}
    unsupported = {
        "description": _STATUS_TEXT[415],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": reference}}},
        "responses": {"415": unsupported},
    }


def document_bodies(app: FastAPI, *models: type[BaseModel]) -> None:
    """Add the models named by `json_body` to the app's OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


ModelT = TypeVar("ModelT", bound=BaseModel)


async def parse_json(request: Request, model: type[ModelT]) -> ModelT:
    """The request's JSON body, validated strictly by `model` in one pass (pydantic-core parses
    the bytes itself); a 422 `validation_error` naming each field's problem otherwise.

    Only a body sent as `application/json` is read (415 otherwise, before the body is): a
    foreign page can make its visitors' browsers send `text/plain`, a form or multipart to us
    without asking first (a CORS "simple request"), but never `application/json`."""
    if not is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType()
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise validation_error(exc.errors(include_input=False)) from None


def is_json(content_type: str | None) -> bool:
    """`application/json`, in any case, with no parameter but an optional UTF-8 charset (JSON is
    UTF-8: RFC 8259)."""
    if content_type is None:
        return False
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if media_type != "application/json":
        return False
    return all(p.replace(" ", "") in ("charset=utf-8", 'charset="utf-8"') for p in parameters)


def validation_error(errors: list[Any]) -> InvalidRequest:
    """A readable message plus each field's problem; never echoes the input back."""
    fields = [
        {
            "field": ".".join(str(part) for part in e.get("loc", ()) if part != "body"),
            "problem": e.get("msg", ""),
        }
        for e in errors
    ]
    summary = "; ".join(f"{f['field'] or 'body'}: {f['problem']}" for f in fields[:5])
    return InvalidRequest(f"The request is not valid: {summary}", fields=fields)


class BodySizeLimit:
    """Refuses bodies over `max_bytes` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(PayloadTooLarge(max_bytes=self.max_bytes))(
                    scope, receive, send
                )
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await error_response(PayloadTooLarge(max_bytes=self.max_bytes))(scope, receive, send)


class _TooLarge(Exception):
    pass


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        return json_response(
            {"error": {"code": code, "message": str(exc.detail)}}, exc.status_code, exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        # A bug, not a client error: logged with its trace, answered without one.
        log.exception("unhandled error", exc_info=exc)
        return json_response(
            {"error": {"code": "internal_error", "message": "Something went wrong on our side."}},
            500,
        )


class ObserveRequests:
    """Around every request, in one layer (each ASGI layer costs on the hot path): an
    `X-Request-ID` on the answer, one log line, the request metrics — and, when the server's
    shutdown cuts a request off before it answered (uvicorn cancels what is still running when
    its graceful-shutdown time is up, e.g. a request whose body it stopped reading), a 503
    "retry" instead of a bare 500: that request was never processed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        status = 500
        answered = False

        async def observed_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except asyncio.CancelledError:
            if not answered:
                response = json_response(
                    {
                        "error": {
                            "code": "shutting_down",
                            "message": "The server is restarting; please retry.",
                        }
                    },
                    503,
                    {"Connection": "close", "Retry-After": "1"},
                )
                with contextlib.suppress(Exception):
                    await response(scope, receive, observed_send)
            raise
        finally:
            elapsed = time.perf_counter() - started
            record_request(scope, status, elapsed)
            log_request(scope, request_id, status, elapsed)

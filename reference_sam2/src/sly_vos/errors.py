"""Every error answer of the app is JSON: ``{"detail": {"error": ..., "field": ...}}``.

A bad request is a 4xx naming the field and the rule; a model that is not implemented yet
is a 501; the platform failing is a 502; anything else a 500 whose message names the
exception but never a server path. The handlers here also cover what fails before a route
runs: a body that is not JSON (the SDK's middleware would answer 500), multipart caps and
form validation of ``/track-api-files``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .platform import PlatformError
from .tracking import TrackerOutputError
from .validation import InputError

logger = logging.getLogger(__name__)

MAX_JSON_BODY_BYTES = 64 * 1024 * 1024  # a /track_async body holds figures, never frames
# An absolute path (two parts or more); relative ones ("src/pkg/model.py") say where to look.
_PATH_RE = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?(?:/[\w.@~+-]+){2,}/?")


class RequestNotFound(LookupError):
    """An ``inference_request_uuid`` the app does not know (or has forgotten)."""


def error_detail(message: str, field: str | None) -> dict[str, Any]:
    """The JSON ``detail`` of every error answer."""
    return {"error": message, "field": field}


def error_response(status: int, message: str, field: str | None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"detail": error_detail(message, field), "success": False}
    )


def public_message(exc: BaseException) -> str:
    """What a user may read about an unexpected error: its type and message, server paths
    replaced (a cache file's path says nothing to an annotator and leaks the layout)."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {_PATH_RE.sub('<path>', text)}"[:500]


def to_http_exception(exc: BaseException) -> HTTPException:
    """Map an error raised while serving a request to its HTTP answer."""
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, InputError):
        return HTTPException(exc.status, detail=error_detail(str(exc), exc.field))
    if isinstance(exc, RequestNotFound):
        return HTTPException(404, detail=error_detail(str(exc), "context.inference_request_uuid"))
    if isinstance(exc, NotImplementedError):
        message = (
            "model: not implemented yet, fill in Tracker in model.py of the app package "
            f"(NotImplementedError: {exc})"
        )
        return HTTPException(501, detail=error_detail(message, "model"))
    if isinstance(exc, PlatformError):
        return HTTPException(502, detail=error_detail(f"platform: {exc}", "platform"))
    if isinstance(exc, TrackerOutputError):
        return HTTPException(500, detail=error_detail(f"model: {exc}", "model"))
    return HTTPException(500, detail=error_detail(f"internal error: {public_message(exc)}", None))


def user_message(exc: BaseException) -> str:
    """The one line the labeling tool shows when a background tracking job fails."""
    detail = to_http_exception(exc).detail
    return detail["error"] if isinstance(detail, dict) else str(detail)


class JsonBodyGuard:
    """ASGI middleware: a tracking route's body must be a JSON object, else a JSON 400.

    The SDK's middleware parses JSON bodies before any route runs and answers 500 when that
    fails; this sits outside it, reads the body once (bounded), checks it and hands the
    same bytes on.
    """

    def __init__(self, app: ASGIApp, paths: Iterable[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_JSON_BODY_BYTES:
                await error_response(413, f"body: larger than {MAX_JSON_BODY_BYTES} bytes", "body")(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = _json_problem(body)
        if problem is not None:
            field, message = problem
            logger.info("Refused request to %s: %s", scope.get("path"), message)
            await error_response(400, message, field)(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
        headers.append((b"content-type", b"application/json"))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, replay, send)


def _json_problem(body: bytes) -> tuple[str, str] | None:
    """``(field, message)`` of what makes ``body`` unusable, or None."""
    try:
        parsed = json.loads(body)
    except UnicodeDecodeError:
        return "body", "body: is not UTF-8 JSON"
    except json.JSONDecodeError as exc:
        return "body", f"body: is not valid JSON ({exc.msg} at char {exc.pos})"
    if not isinstance(parsed, dict):
        return "body", f"body: must be a JSON object, got {type(parsed).__name__}"
    context = parsed.get("context")
    if context is not None and not isinstance(context, dict):
        return "context", f"context: must be a JSON object, got {type(context).__name__}"
    return None


def install(server: FastAPI, json_paths: Iterable[str], files_path: str) -> None:
    """JSON answers for what fails before a route body runs.

    ``files_path`` (``/track-api-files``): form validation (no ``files``) and Starlette's
    multipart caps (1000 files, 1 MB per form field) become the ``{"detail": {error,
    field}}`` format. Other routes keep the SDK's answers.
    """
    server.add_middleware(JsonBodyGuard, paths=list(json_paths))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        field = loc[0] if loc else "body"
        message = f"{field}: {first.get('msg', 'invalid request')}"
        if field == "files":
            message = "files: at least one frame (the annotated one) is required as a file part"
        return error_response(400, message, field)

    async def on_form_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, StarletteHTTPException)
        if request.url.path != files_path or not isinstance(exc.detail, str):
            return await http_exception_handler(request, exc)
        text = exc.detail
        field = "files" if "files" in text.lower() else "settings" if "exceeded" in text else "body"
        return error_response(exc.status_code, f"{field}: {text}", field)

    server.add_exception_handler(StarletteHTTPException, on_form_error)
    server.add_exception_handler(RequestValidationError, on_validation_error)

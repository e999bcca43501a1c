"""A small client for the Supervisely platform API v3, as the tracking endpoints use it.

The SDK's ``supervisely.Api`` cannot serve the tracking endpoints: it posts without a timeout
(a platform that stops answering hangs the request for good) and retries 10 times sleeping up
to 60 s (about 5 minutes against an unreachable platform). This client speaks the same wire
format (``POST {server}/public/api/v3/<method>``, header ``x-api-key``, JSON bodies with the
SDK's field names; checked body for body against the SDK in ``tests/test_platform.py``) and
every call ends within ``HttpPolicy.worst_case_s()``.

The session, the policy and its urllib3 ``Retry`` come from ``sly_vos.transport`` (shared
with the weight downloads), but the loop that applies the ``Retry`` is here, around whole
attempts: requests' adapter reads only the status line and headers under its ``Retry``
(``HTTPAdapter.send`` passes ``preload_content=False``), so a connection lost or stalled in
the middle of a body would escape both the retries and the time limit.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import HTTPError as Urllib3Error

from .transport import RETRY_STATUSES, HttpPolicy, cause_of, new_session, pause

__all__ = [
    "FigureRecord",
    "PlatformClient",
    "PlatformConfigError",
    "PlatformError",
    "VideoInfo",
]

API_PREFIX = "/public/api"
FIGURES_PER_ADD = 100  # figures per figures.bulk.add, as the SDK's _append_bulk sends
# What the SDK's FigureApi.get_info_by_id asks figures.info for (sic: "imageId", not
# "entityId", so the SDK's FigureInfo.entity_id of a video figure comes back None).
FIGURE_FIELDS = (
    "id",
    "createdAt",
    "updatedAt",
    "imageId",
    "objectId",
    "classId",
    "projectId",
    "datasetId",
    "geometry",
    "geometryType",
    "geometryMeta",
    "tags",
    "meta",
    "area",
    "priority",
    "nnCreated",
    "nnUpdated",
)
# Reads and notifications are retried on transport.RETRY_STATUSES (408, 429, 5xx).
# figures.bulk.add is not idempotent: only answers that prove nothing was added are retried
# (429: refused by the rate limiter; 503: no upstream took it). A 500/502/504 or a
# connection lost after the request went out may come after the figures were stored, and a
# retry would add them twice.
ADD_RETRY_STATUSES = frozenset({429, 503})
_MESSAGE_CHARS = 200
_ADDRESS_RE = re.compile(r"https?://(?:[^\s/:@\[\]]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?(?:/\S*)?")


class PlatformError(Exception):
    """The platform answered an error or could not be reached in time.

    ``str()`` is fit to show in the labeling tool: it names the API method and what went
    wrong, never the token or a local path. ``status`` is the HTTP status, or None when no
    answer came; ``kind`` is one of ``http``, ``timeout``, ``unreachable``, ``connection``,
    ``answer`` (a malformed answer or an undecodable frame) and ``request``.
    """

    def __init__(self, method: str, message: str, status: int | None = None, kind: str = "http"):
        super().__init__(f"{method}: {message}")
        self.method = method
        self.detail = message
        self.status = status
        self.kind = kind


class PlatformConfigError(ValueError):
    """No server address or token to reach the platform with; ``field`` names what is missing."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class VideoInfo:
    """What tracking needs of ``videos.info``: the frame count and size."""

    id: int
    name: str
    frames_count: int
    width: int
    height: int


@dataclass(frozen=True)
class FigureRecord:
    """What tracking needs of ``figures.info``; ``frame_index`` is the answer's ``meta.frame``."""

    id: int
    object_id: int
    frame_index: int | None
    geometry_type: str
    geometry: dict


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    content: bytes
    raw: Any  # the urllib3 response, for Retry.increment and its Retry-After


def _normalize_address(address: str) -> str:
    """As the SDK: strip slashes, ``http://`` when no scheme is given."""
    result = address.strip().strip("/")
    if "http://" not in result and "https://" not in result:
        result = "http://" + result
    return result


def _check_address(address: Any, field: str) -> str:
    if not isinstance(address, str) or not address.strip():
        raise PlatformConfigError(field, f"{field} is empty")
    result = _normalize_address(address)
    if not _ADDRESS_RE.fullmatch(result):
        raise PlatformConfigError(field, f"{field} is not an http(s) address")
    return result


def _check_token(token: Any, field: str) -> str:
    if not isinstance(token, str) or not token.strip():
        raise PlatformConfigError(field, f"{field} is empty")
    if not token.isascii() or not token.isprintable():  # it goes into an HTTP header
        raise PlatformConfigError(field, f"{field} holds characters a header cannot carry")
    return token


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays, which tracking code hands over easily."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _socket_of(raw: Any) -> Any:
    connection = getattr(raw, "connection", None)
    return getattr(connection, "sock", None)


def _read_body(raw: Any, deadline: float, policy: HttpPolicy, url: str) -> bytes:
    """The whole body by ``deadline``: each read may wait only for the time that is left."""
    body = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ReadTimeoutError(None, url, "answer not complete in time")  # type: ignore[arg-type]
        sock = _socket_of(raw)
        if sock is not None:
            sock.settimeout(min(policy.read_timeout_s, left))
        chunk = raw.read1(policy.chunk_bytes, decode_content=True)
        if not chunk:
            return bytes(body)
        body += chunk


def _decode_image(data: bytes) -> np.ndarray | None:
    """HxWx3 uint8 RGB from JPEG/PNG bytes (decoded like the SDK's ``read_bytes``)."""
    if not data:
        return None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        return None
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _int_field(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class PlatformClient:
    """The platform API v3 methods the tracking endpoints need, each call bounded in time.

    Thread-safe as requests' ``Session`` is for concurrent posts (a pool of 8 connections).
    """

    def __init__(
        self,
        server_address: str,
        api_token: str,
        policy: HttpPolicy | None = None,
        *,
        api_server_address: str | None = None,
        task_id: str | None = None,
    ):
        self.server_address = _check_address(server_address, "server_address")
        token = _check_token(api_token, "api_token")
        if api_server_address:
            self.api_base = _check_address(api_server_address, "SUPERVISELY_API_SERVER_ADDRESS")
        else:
            self.api_base = self.server_address + API_PREFIX
        self.policy = policy or HttpPolicy()
        self._token = token
        self._headers = {"x-api-key": token, "Content-Type": "application/json"}
        if task_id:
            self._headers["x-task-id"] = str(task_id)  # as the SDK, from SUPERVISELY_TASK_ID
        self._session = new_session(self.policy)  # no adapter retries: ``_post`` retries

    @classmethod
    def from_request(
        cls,
        body: Mapping[str, Any] | None,
        env: Mapping[str, str] = os.environ,
        policy: HttpPolicy | None = None,
    ) -> PlatformClient:
        """Like the SDK's middleware: ``api_token`` in the body (or ``context.apiToken``)
        plus ``server_address`` in the body (or env SERVER_ADDRESS); otherwise env
        SERVER_ADDRESS + API_TOKEN. Env SUPERVISELY_API_SERVER_ADDRESS replaces the
        ``<server>/public/api`` base like in the SDK."""
        body = body if isinstance(body, Mapping) else {}
        context = body.get("context")
        token = body.get("api_token")
        if not token and isinstance(context, Mapping):
            token = context.get("apiToken")
        server = body.get("server_address") or env.get("SERVER_ADDRESS")
        token_field, server_field = "api_token", "server_address"
        if not (token and server):  # the app's own credentials, both from the environment
            token, server = env.get("API_TOKEN"), env.get("SERVER_ADDRESS")
            token_field, server_field = "API_TOKEN", "SERVER_ADDRESS"
        if not server:
            raise PlatformConfigError(
                "SERVER_ADDRESS",
                "no platform address: the request has no server_address and env "
                "SERVER_ADDRESS is not set",
            )
        if not token:
            raise PlatformConfigError(
                "API_TOKEN",
                "no API token: the request has no api_token (or context.apiToken) and env "
                "API_TOKEN is not set",
            )
        _check_address(server, server_field)
        _check_token(token, token_field)
        return cls(
            server,
            token,
            policy or HttpPolicy.from_env(env),
            api_server_address=env.get("SUPERVISELY_API_SERVER_ADDRESS") or None,
            task_id=env.get("SUPERVISELY_TASK_ID") or None,
        )

    def __repr__(self) -> str:
        return f"PlatformClient({self.api_base!r})"

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    # ------------------------------------------------------------------ transport

    def _post(self, method: str, body: Mapping[str, Any], *, idempotent: bool = True) -> _Answer:
        """One API call: attempts under the policy's ``Retry``; a 200 answer or PlatformError."""
        url = f"{self.api_base}/v3/{method}"
        try:
            data = json.dumps(body, default=_plain, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise PlatformError(method, f"the request is not JSON: {exc}", kind="request") from None
        if idempotent:
            state = self.policy.retry({"POST"}, RETRY_STATUSES)
        else:  # a read error is final (the figures may be stored); connect errors are not
            state = self.policy.retry({"POST"}, ADD_RETRY_STATUSES, idempotent=False)
        while True:
            try:
                answer = self._attempt(method, url, data)
            except Urllib3Error as failure:
                tries = len(state.history) + 1
                try:
                    state = state.increment("POST", url, error=failure)
                except Exception:  # spent (MaxRetryError), or not to be retried (the error)
                    raise self._failure(method, failure, tries, idempotent) from None
                pause(state, self.policy)
                continue
            if answer.status == 200:
                return answer
            tries = len(state.history) + 1
            if state.is_retry("POST", answer.status):
                try:
                    state = state.increment("POST", url, response=answer.raw)
                except MaxRetryError:
                    raise self._http_error(method, answer, tries) from None
                pause(state, self.policy, answer.raw)
                continue
            raise self._http_error(method, answer, tries)

    def _attempt(self, method: str, url: str, data: bytes) -> _Answer:
        """One request, its whole answer read within ``policy.attempt_s``."""
        policy = self.policy
        deadline = time.monotonic() + policy.attempt_s
        try:
            response = self._session.post(
                url,
                data=data,
                headers=self._headers,
                timeout=policy.timeout,
                stream=True,
                allow_redirects=False,
            )
        except (requests.RequestException, Urllib3Error) as exc:
            cause = cause_of(exc)
            if cause is None:  # e.g. an invalid URL: no attempt would do better
                raise PlatformError(method, type(exc).__name__, kind="request") from None
            raise cause from None
        with response:
            try:
                content = _read_body(response.raw, deadline, policy, url)
            except OSError as exc:  # a socket error urllib3 did not wrap
                raise ProtocolError("Connection broken.", exc) from None
            return _Answer(response.status_code, response.headers, content, response.raw)

    def _scrub(self, text: str) -> str:
        text = text.replace(self._token, "<token>")
        text = " ".join(text.split())
        if len(text) > _MESSAGE_CHARS:
            text = text[: _MESSAGE_CHARS - 3] + "..."
        return text

    def _http_error(self, method: str, answer: _Answer, tries: int) -> PlatformError:
        detail = ""
        try:
            payload = json.loads(answer.content)
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            for key in ("error", "message", "detail"):
                if isinstance(payload.get(key), str):
                    detail = payload[key]
                    break
            details = payload.get("details")
            if isinstance(details, dict) and isinstance(details.get("message"), str):
                detail = f"{detail} ({details['message']})" if detail else details["message"]
        elif answer.content and not answer.content.lstrip().startswith(b"<"):
            detail = answer.content[:400].decode("utf-8", "replace")
        message = f"the platform answered {answer.status}"
        if 300 <= answer.status < 400:
            message += " (a redirect: is the server address http:// where https:// is needed?)"
        if detail:
            message += f": {self._scrub(detail)}"
        if tries > 1:
            message += f" (after {tries} attempts)"
        return PlatformError(method, message, status=answer.status, kind="http")

    def _failure(
        self, method: str, failure: BaseException, tries: int, idempotent: bool
    ) -> PlatformError:
        attempts = f"{tries} attempt" + ("s" if tries > 1 else "")
        if isinstance(failure, NewConnectionError):
            what = "connection refused" if "refused" in str(failure).lower() else "no connection"
            return PlatformError(
                method, f"could not reach the platform ({what}; {attempts})", kind="unreachable"
            )
        if isinstance(failure, ConnectTimeoutError):
            return PlatformError(
                method,
                f"could not reach the platform (no connection within "
                f"{self.policy.connect_timeout_s:g} s; {attempts})",
                kind="unreachable",
            )
        unsure = "" if idempotent else "; it may have been applied, so it was not retried"
        if isinstance(failure, ReadTimeoutError):
            return PlatformError(
                method,
                f"no complete answer within {self.policy.attempt_s:g} s ({attempts}{unsure})",
                kind="timeout",
            )
        if isinstance(failure, SSLError):
            return PlatformError(method, f"TLS failed ({attempts})", kind="connection")
        return PlatformError(
            method,
            f"the connection was lost before the answer was complete ({attempts}{unsure})",
            kind="connection",
        )

    def _json(self, method: str, answer: _Answer) -> Any:
        try:
            return json.loads(answer.content)
        except ValueError:
            raise PlatformError(method, "the answer is not JSON", 200, kind="answer") from None

    # ------------------------------------------------------------------ API methods

    def video_info(self, video_id: int) -> VideoInfo:
        """``videos.info``: name, frame count and size (``fileMeta``) of a video."""
        method = "videos.info"
        info = self._json(
            method, self._post(method, {"id": video_id, "forceMetadataForLinks": True})
        )
        meta = info.get("fileMeta") if isinstance(info, dict) else None
        if not isinstance(meta, dict):
            raise PlatformError(method, "the answer has no fileMeta", 200, kind="answer")
        values = {k: _int_field(meta.get(k)) for k in ("framesCount", "width", "height")}
        bad = [k for k, v in values.items() if v is None or v < 0]
        if bad or _int_field(info.get("id")) is None:
            missing = ", ".join(f"fileMeta.{k}" for k in bad) or "id"
            raise PlatformError(method, f"the answer has no valid {missing}", 200, kind="answer")
        return VideoInfo(
            id=info["id"],
            name=str(info.get("name") or ""),
            frames_count=values["framesCount"],  # type: ignore[arg-type]
            width=values["width"],  # type: ignore[arg-type]
            height=values["height"],  # type: ignore[arg-type]
        )

    def figure_info(self, figure_id: int) -> FigureRecord:
        """``figures.info`` asked for the SDK's fields; the frame is the answer's ``meta.frame``."""
        method = "figures.info"
        info = self._json(
            method, self._post(method, {"id": figure_id, "fields": list(FIGURE_FIELDS)})
        )
        if not isinstance(info, dict):
            raise PlatformError(method, "the answer is not an object", 200, kind="answer")
        meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
        ident, object_id = _int_field(info.get("id")), _int_field(info.get("objectId"))
        kind, geometry = info.get("geometryType"), info.get("geometry")
        if ident is None or object_id is None or not isinstance(kind, str):
            raise PlatformError(
                method, "the answer lacks id, objectId or geometryType", 200, kind="answer"
            )
        if not isinstance(geometry, dict):
            raise PlatformError(method, "the answer has no geometry object", 200, kind="answer")
        return FigureRecord(ident, object_id, _int_field(meta.get("frame")), kind, geometry)

    def download_frame(self, video_id: int, frame_index: int) -> np.ndarray:
        """``videos.download-frame``: one frame as HxWx3 uint8 RGB."""
        method = "videos.download-frame"
        answer = self._post(method, {"videoId": video_id, "frame": frame_index})
        image = _decode_image(answer.content)
        if image is None:
            raise PlatformError(
                method,
                f"frame {frame_index} of video {video_id} is not a JPEG or PNG image",
                200,
                kind="answer",
            )
        return image

    def add_figures(self, video_id: int, figures: Sequence[Mapping[str, Any]]) -> list[int]:
        """``figures.bulk.add`` (figure dicts in the SDK's JSON: ``objectId``,
        ``geometryType``, ``geometry``, ``meta: {frame}``, ``trackId``, ``nnCreated``,
        ``nnUpdated``), 100 a call; the new ids in order."""
        method = "figures.bulk.add"
        ids: list[int] = []
        for start in range(0, len(figures), FIGURES_PER_ADD):
            batch = [dict(figure) for figure in figures[start : start + FIGURES_PER_ADD]]
            try:
                answer = self._post(
                    method, {"entityId": video_id, "figures": batch}, idempotent=False
                )
            except PlatformError as exc:
                if not ids:
                    raise
                done = f"{len(ids)} of the {len(figures)} figures were added before"
                raise PlatformError(
                    method, f"{exc.detail} ({done})", exc.status, exc.kind
                ) from None
            result = self._json(method, answer)
            new = [
                _int_field(item.get("id")) if isinstance(item, dict) else None
                for item in (result if isinstance(result, list) else [])
            ]
            if len(new) != len(batch) or any(i is None for i in new):
                raise PlatformError(
                    method, f"the answer does not list {len(batch)} new ids", 200, kind="answer"
                )
            ids.extend(new)  # type: ignore[arg-type]
        return ids

    def notify_progress(
        self,
        track_id: Any,
        video_id: int,
        frame_range: tuple[int, int],
        current: int,
        total: int,
        tracked_figures: Mapping[Any, int] | None = None,
    ) -> bool:
        """``videos:fetch-figures-in-range`` to the tool; True when its stop was pressed.

        ``tracked_figures`` counts results per source figure id; the ids go as strings (the
        SDK's MaskTracking sends a boolean in their place, see PLATFORM_API.md). An answer
        without ``stopped`` (the SDK would raise KeyError) counts as not stopped.
        """
        method = "videos.notify-annotation-tool"
        data: dict[str, Any] = {
            "trackId": track_id,
            "videoId": video_id,
            "frameRange": [frame_range[0], frame_range[1]],
            "progress": {"current": current, "total": total},
        }
        if tracked_figures is not None:
            data["trackedFigures"] = {str(k): int(v) for k, v in tracked_figures.items()}
        answer = self._json(
            method, self._post(method, {"type": "videos:fetch-figures-in-range", "data": data})
        )
        if not isinstance(answer, dict):
            raise PlatformError(method, "the answer is not an object", 200, kind="answer")
        return bool(answer.get("stopped", False))

    def notify_error(self, track_id: Any, message: str) -> None:
        """``videos:tracking-error``: the tool shows ``message`` as it is (the SDK sends
        ``"<ExceptionName>: <message>"``; pass that form for the same text)."""
        method = "videos.notify-annotation-tool"
        body = {
            "type": "videos:tracking-error",
            "data": {"trackId": track_id, "error": {"message": message}},
        }
        self._post(method, body)

    def direct_progress(
        self,
        session_id: Any,
        video_id: int,
        track_id: Any,
        frame_range: tuple[int, int],
        current: int,
        total: int,
    ) -> None:
        """``figures/setDirectTrackingProgress`` (when the tool set useDirectProgressMessages)."""
        payload = {
            "trackId": track_id,
            "videoId": video_id,
            "frameRange": [frame_range[0], frame_range[1]],
            "progress": {"current": current, "total": total},
        }
        self._run_action(session_id, payload)

    def direct_error(self, session_id: Any, video_id: int, track_id: Any, message: str) -> None:
        """The same action with ``type: "error"``: the tool's direct error message."""
        payload = {
            "trackId": track_id,
            "videoId": video_id,
            "type": "error",
            "error": {"message": message},
        }
        self._run_action(session_id, payload)

    def _run_action(self, session_id: Any, payload: dict[str, Any]) -> None:
        body = {
            "sessionId": session_id,
            "action": "figures/setDirectTrackingProgress",
            "payload": payload,
        }
        self._post("annotation-tool.run-action", body)

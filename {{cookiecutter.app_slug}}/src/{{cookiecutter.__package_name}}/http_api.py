"""Checks and conversions behind ``POST /track-api-files``.

The SDK's handler trusts its input: malformed settings become a 500, a few hundred bytes of
PNG claiming 30000x30000 pixels make it allocate gigabytes, and each geometry costs one model
pass. Everything here refuses a bad request with ``validation.InputError`` (a field name, a
rule, an HTTP status) *before* the expensive step it protects: counts and settings before
the files are touched, image headers before pixels are decoded, bitmap sizes before masks
are inflated. ``app.py`` turns the errors into JSON 4xx answers.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import io
import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image, ImageFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from supervisely.annotation.label import Label
from supervisely.annotation.obj_class import ObjClass
from supervisely.geometry.bitmap import Bitmap
from supervisely.geometry.point_location import PointLocation
from supervisely.geometry.polygon import Polygon

from . import limits
from .validation import InputError

logger = logging.getLogger(__name__)

# ``supervisely.imaging.image`` sets this to True on import (lenient dataset loading), which
# would decode a truncated upload as a partly grey frame and track on it. A server refuses it.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ROUTE = "/track-api-files"
SUPPORTED_GEOMETRIES = ("bitmap", "polygon")
# Decoders PIL may use for frames; the list keeps exotic plugins (EPS runs Ghostscript) out.
FRAME_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF")
DIRECTIONS = ("forward", "backward")
# The SDK accepts both spellings of each settings key.
SETTINGS_KEYS = {
    "frame_index": ("frame_index", "frameIndex"),
    "frames": ("frames", "framesCount"),
    "input_geometries": ("input_geometries", "inputGeometries"),
}


@dataclass(frozen=True)
class TrackSettings:
    """The validated ``settings`` form field."""

    frame_index: int
    frames: int
    direction: str
    geometries: list[dict[str, Any]]


# ---------------------------------------------------------------- settings


def _lookup(settings: dict[str, Any], name: str) -> Any:
    for key in SETTINGS_KEYS[name]:
        if key in settings:
            return settings[key]
    raise InputError(f"settings.{name}", "is required", 400)


def _non_negative_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(field, f"must be an integer >= 0, got {value!r:.60}", 400)
    if value < 0:
        raise InputError(field, f"must be an integer >= 0, got {value}", 400)
    return value


def parse_settings(settings: Any, num_files: int) -> TrackSettings:
    """Check the ``settings`` JSON against the uploaded file count."""
    if not isinstance(settings, dict):
        raise InputError("settings", f"must be a JSON object, got {type(settings).__name__}", 400)
    frame_index = _non_negative_int(_lookup(settings, "frame_index"), "settings.frame_index")
    frames = _non_negative_int(_lookup(settings, "frames"), "settings.frames")
    if frames != num_files - 1:
        raise InputError(
            "settings.frames",
            f"must equal the number of uploaded files minus one (the annotated frame): "
            f"{num_files} files need frames={num_files - 1}, got {frames}",
            422,
        )
    direction = settings.get("direction", "forward")
    if direction not in DIRECTIONS:
        raise InputError(
            "settings.direction", f"must be 'forward' or 'backward', got {direction!r:.60}", 400
        )
    geometries = _lookup(settings, "input_geometries")
    if not isinstance(geometries, list) or not geometries:
        raise InputError(
            "settings.input_geometries", "must be a non-empty list of {type, data} objects", 400
        )
    if len(geometries) > limits.MAX_OBJECTS:
        raise InputError(
            "settings.input_geometries",
            f"{len(geometries)} geometries exceed the limit MAX_OBJECTS={limits.MAX_OBJECTS} "
            "per request (objects share one uint8 label mask)",
            413,
        )
    for index, item in enumerate(geometries):
        field = f"settings.input_geometries[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise InputError(field, "must be an object {type, data} with data an object", 400)
        if item.get("type") not in SUPPORTED_GEOMETRIES:
            raise InputError(
                f"{field}.type",
                f"must be 'bitmap' or 'polygon', got {item.get('type')!r:.60}",
                400,
            )
    return TrackSettings(frame_index, frames, direction, geometries)


# ---------------------------------------------------------------- frames


def check_file_count(num_files: int) -> None:
    """Refuse an empty or oversized upload before any file is read."""
    if num_files < 1:
        raise InputError("files", "at least one frame (the annotated one) is required", 400)
    if num_files > limits.MAX_FRAMES:
        raise InputError(
            "files",
            f"{num_files} frames exceed the limit MAX_FRAMES={limits.MAX_FRAMES} per request",
            413,
        )


def _max_file_bytes() -> int:
    """No legitimate frame file is larger than its uncompressed pixels plus headers."""
    return 4 * limits.MAX_FRAME_PIXELS + (1 << 20)


def open_frames(files: Sequence[BinaryIO]) -> list[Image.Image]:
    """Open every file lazily (header only) and check sizes and pixel limits.

    Nothing is decoded here, so a tiny file claiming a huge size costs nothing.
    """
    images: list[Image.Image] = []
    total = 0
    for index, file in enumerate(files):
        field = f"files[{index}]"
        file.seek(0, io.SEEK_END)
        size_bytes = file.tell()
        file.seek(0)
        if size_bytes == 0:
            raise InputError(field, "is an empty file, expected an encoded image", 400)
        if size_bytes > _max_file_bytes():
            raise InputError(
                field,
                f"is {size_bytes} bytes, larger than any image within "
                f"MAX_FRAME_PIXELS={limits.MAX_FRAME_PIXELS}",
                413,
            )
        try:
            image = Image.open(file, formats=FRAME_FORMATS)
        except Image.DecompressionBombError as exc:
            raise InputError(
                field, f"image exceeds MAX_FRAME_PIXELS={limits.MAX_FRAME_PIXELS} ({exc})", 413
            ) from exc
        except Exception as exc:  # PIL raises many types for junk; all mean "not an image"
            raise InputError(
                field,
                f"cannot be read as an image ({', '.join(FRAME_FORMATS)}): {type(exc).__name__}",
                400,
            ) from exc
        width, height = image.size
        if width < 1 or height < 1:
            raise InputError(field, f"has an empty size {width}x{height}", 400)
        if width * height > limits.MAX_FRAME_PIXELS:
            raise InputError(
                field,
                f"is {width}x{height} = {width * height} pixels, over the limit "
                f"MAX_FRAME_PIXELS={limits.MAX_FRAME_PIXELS}",
                413,
            )
        if images and image.size != images[0].size:
            first_w, first_h = images[0].size
            raise InputError(
                field,
                f"is {width}x{height} but files[0] is {first_w}x{first_h}; "
                "all frames must have the same size",
                422,
            )
        total += width * height
        if total > limits.MAX_TOTAL_PIXELS:
            raise InputError(
                "files",
                f"{len(files)} frames of {width}x{height} exceed the limit "
                f"MAX_TOTAL_PIXELS={limits.MAX_TOTAL_PIXELS} pixels per request",
                413,
            )
        images.append(image)
    return images


def decode_frame(image: Image.Image, index: int) -> np.ndarray:
    """Decode one opened image to HxWx3 uint8 RGB (grayscale, RGBA, palette converted)."""
    try:
        image.load()
        if image.mode.startswith("I;16"):  # 16-bit grey: keep the high byte, as OpenCV does
            grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            array = np.repeat(grey[..., None], 3, axis=2)
        else:
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            array = np.array(rgb, dtype=np.uint8)
    except Exception as exc:  # truncated or corrupt data
        raise InputError(
            f"files[{index}]", f"cannot be decoded ({type(exc).__name__}: {exc})", 400
        ) from exc
    finally:
        image.close()
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"files[{index}]", f"decoded to shape {array.shape}, not HxWx3", 400)
    return array


# ---------------------------------------------------------------- geometries


def _inflate(raw: bytes, limit: int, field: str) -> bytes:
    """zlib-decompress at most ``limit`` bytes (a small zlib stream can inflate to gigabytes)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(raw, limit)
    if inflater.unconsumed_tail:
        raise InputError(field, f"decompresses to more than {limit} bytes", 413)
    return out


def _decode_bitmap(data: dict[str, Any], field: str, height: int, width: int) -> Bitmap:
    """Bitmap JSON -> ``Bitmap``, with the mask size checked before it is decoded."""
    body = data.get("bitmap")
    if not isinstance(body, dict):
        raise InputError(field, "must hold {'bitmap': {'origin': [x, y], 'data': base64}}", 400)
    origin = body.get("origin")
    if (
        not isinstance(origin, list)
        or len(origin) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in origin)
    ):
        raise InputError(f"{field}.bitmap.origin", "must be [x, y] with two integers", 400)
    col, row = origin
    if not isinstance(body.get("data"), str):
        raise InputError(f"{field}.bitmap.data", "must be a base64 string", 400)
    try:
        raw = base64.b64decode(body["data"])
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{field}.bitmap.data", f"is not valid base64 ({exc})", 400) from exc
    png_limit = 4 * height * width + (1 << 16)
    try:
        png = _inflate(raw, png_limit, f"{field}.bitmap.data")
    except zlib.error:
        png = raw  # the SDK also accepts a PNG that is not zlib-wrapped
    try:
        image = Image.open(io.BytesIO(png), formats=("PNG",))
    except Image.DecompressionBombError as exc:
        raise InputError(field, f"bitmap is larger than the {width}x{height} frame", 422) from exc
    except Exception as exc:
        raise InputError(
            f"{field}.bitmap.data", f"is not a zlib-compressed PNG mask ({type(exc).__name__})", 400
        ) from exc
    mask_w, mask_h = image.size
    if col < 0 or row < 0 or col + mask_w > width or row + mask_h > height:
        raise InputError(
            field,
            f"bitmap of {mask_w}x{mask_h} at origin [{col}, {row}] does not fit in the "
            f"{width}x{height} frame",
            422,
        )
    try:
        image.load()
        pixels = np.asarray(image)
    except Exception as exc:
        raise InputError(
            f"{field}.bitmap.data", f"mask cannot be decoded ({type(exc).__name__})", 400
        ) from exc
    if pixels.ndim == 2:
        mask = pixels != 0
    elif image.mode in ("LA", "RGBA", "PA"):
        mask = pixels[..., -1] != 0  # the SDK reads the alpha channel of 4-channel masks
    else:
        raise InputError(
            f"{field}.bitmap.data",
            f"mask PNG has mode {image.mode}; expected one channel (0 = background) or RGBA",
            400,
        )
    if not mask.any():
        raise InputError(field, "bitmap mask is empty (no pixel set)", 422)
    return Bitmap(mask, origin=PointLocation(row=row, col=col))


def _check_point(point: Any) -> bool:
    return (
        isinstance(point, list)
        and len(point) == 2
        and all(
            not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
            for v in point
        )
    )


def _decode_polygon(data: dict[str, Any], field: str, height: int, width: int) -> Bitmap:
    """Polygon JSON -> ``Bitmap`` rasterised like the SDK (``Label.convert`` to a bitmap)."""
    points = data.get("points")
    if not isinstance(points, dict) or not isinstance(points.get("exterior"), list):
        raise InputError(field, "must hold {'points': {'exterior': [[x, y], ...]}}", 400)
    interior = points.get("interior", [])
    rings = [points["exterior"]] + (interior if isinstance(interior, list) else [None])
    for ring_index, ring in enumerate(rings):
        name = "exterior" if ring_index == 0 else f"interior[{ring_index - 1}]"
        if not isinstance(ring, list) or len(ring) < 3 or not all(map(_check_point, ring)):
            raise InputError(
                f"{field}.points.{name}", "must be a list of at least 3 [x, y] numbers", 400
            )
    xs = [p[0] for p in points["exterior"]]
    ys = [p[1] for p in points["exterior"]]
    if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
        raise InputError(
            field,
            f"polygon spans x {min(xs)}..{max(xs)}, y {min(ys)}..{max(ys)}, outside the "
            f"{width}x{height} frame",
            422,
        )
    try:
        polygon = Polygon.from_json(data)
        converted = Label(polygon, ObjClass("polygon", Polygon)).convert(ObjClass("bitmap", Bitmap))
    except Exception as exc:
        message = f"is not a valid polygon ({type(exc).__name__}: {exc})"
        raise InputError(field, message, 400) from exc
    if not converted:
        raise InputError(field, "polygon covers no pixel", 422)
    return converted[0].geometry


def draw_geometries(
    raw: Sequence[dict[str, Any]], height: int, width: int
) -> tuple[np.ndarray, list[str]]:
    """Decode the input geometries and draw geometry k (in order) with id k+1 into one uint8
    label mask; later ones cover earlier ones, as in the SDK. Returns the mask and the type
    of each geometry (the answer uses the same type).

    Each geometry is drawn as soon as it is decoded, so 255 full-frame masks never sit in
    memory together. A figure fully covered by later ones leaves its id missing: ids need
    not be consecutive (``tracking.run_tracker`` compacts them).
    """
    label = np.zeros((height, width), dtype=np.uint8)
    kinds: list[str] = []
    for index, item in enumerate(raw):
        field = f"settings.input_geometries[{index}]"
        if item["type"] == "bitmap":
            bitmap = _decode_bitmap(item["data"], field, height, width)
        else:
            bitmap = _decode_polygon(item["data"], field, height, width)
        bitmap.draw(bitmap=label, color=index + 1)
        kinds.append(item["type"])
    return label, kinds


# ---------------------------------------------------------------- answer


def object_boxes(mask: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Bounding box ``(top, bottom, left, right)`` (exclusive ends) of every id in ``mask``.

    One pass over the foreground pixels (a stable sort of uint8 ids is a radix sort), so a
    frame with many objects is not scanned once per object.
    """
    flat = mask.ravel()
    where = np.flatnonzero(flat)
    if where.size == 0:
        return {}
    ids = flat[where]
    order = np.argsort(ids, kind="stable")
    ids, where = ids[order], where[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], ids.size]
    rows, cols = np.divmod(where, mask.shape[1])
    boxes: dict[int, tuple[int, int, int, int]] = {}
    for start, end in zip(starts, ends, strict=True):
        r, c = rows[start:end], cols[start:end]
        boxes[int(ids[start])] = (int(r.min()), int(r.max()) + 1, int(c.min()), int(c.max()) + 1)
    return boxes


def _mask_to_json(
    mask: np.ndarray, obj_id: int, box: tuple[int, int, int, int], kind: str
) -> list[dict[str, Any]]:
    top, bottom, left, right = box
    bitmap = Bitmap(mask[top:bottom, left:right] == obj_id, origin=PointLocation(top, left))
    if kind == "polygon":
        label = Label(bitmap, ObjClass("bitmap", Bitmap))
        shapes = [lab.geometry for lab in label.convert(ObjClass("polygon", Polygon))]
    else:
        shapes = [bitmap]
    return [{"type": shape.geometry_name(), "data": shape.to_json()} for shape in shapes]


def build_response(masks: Sequence[np.ndarray], kinds: Sequence[str]) -> list[list[dict[str, Any]]]:
    """The SDK's answer: per frame after the first, the geometries in input order, typed like
    the input (a polygon may come back as several), empty masks left out."""
    results: list[list[dict[str, Any]]] = []
    for mask in masks[1:]:
        boxes = object_boxes(mask)
        frame: list[dict[str, Any]] = []
        for obj_id, kind in enumerate(kinds, start=1):
            if obj_id in boxes:
                frame.extend(_mask_to_json(mask, obj_id, boxes[obj_id], kind))
        results.append(frame)
    return results


# ---------------------------------------------------------------- memory


M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


def _load_malloc_trim() -> Any:
    """glibc's ``malloc_trim``, after capping its arenas (None on other C libraries).

    Requests run on the server's thread pool; glibc gives each thread its own heap arena,
    and freed model activations stay resident in whichever arenas last held them. Two
    arenas keep the memory of a long-running server flat under concurrent requests.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> None:
    """Hand freed heap pages back to the OS after a request.

    Frames are a few MB each; after the first is freed glibc raises its mmap threshold and
    serves the next ones from the heap, whose free pages it keeps. Without this the process
    stays at the peak of its largest request forever.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


# ---------------------------------------------------------------- errors


def error_detail(message: str, field: str | None) -> dict[str, Any]:
    """The JSON ``detail`` of every error answer."""
    return {"error": message, "field": field}


def to_http_exception(exc: BaseException) -> HTTPException:
    """Map an error raised while serving a request to its HTTP answer."""
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, InputError):
        return HTTPException(exc.status, detail=error_detail(str(exc), exc.field))
    if isinstance(exc, NotImplementedError):
        return HTTPException(
            501,
            detail=error_detail(
                "model: not implemented yet, fill in Tracker in model.py of the app package "
                f"(NotImplementedError: {exc})",
                "model",
            ),
        )
    return HTTPException(
        500,
        detail=error_detail(f"internal error: {type(exc).__name__}: {exc}"[:500], None),
    )


def install_error_handlers(server: FastAPI) -> None:
    """JSON 4xx in the ``{"detail": {"error", "field"}}`` format for errors raised before
    ``track_api_files`` runs.

    ``json.loads(settings)`` in the SDK route raises ``JSONDecodeError`` (a 500 otherwise);
    a request without ``files`` fails FastAPI's form validation (a 422 in another format);
    Starlette's multipart caps raise a plain ``HTTPException``. Other routes keep their
    answers.
    """

    async def on_json_error(request: Request, exc: Exception) -> JSONResponse:
        if not request.url.path.endswith(ROUTE):
            raise exc  # other routes keep the SDK's behaviour
        assert isinstance(exc, json.JSONDecodeError)
        message = f"settings: is not valid JSON ({exc.msg} at char {exc.pos})"
        logger.info("Refused request to %s: %s", request.url.path, message)
        return JSONResponse(
            status_code=400, content={"detail": error_detail(message, "settings"), "success": False}
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if not request.url.path.endswith(ROUTE):
            return await request_validation_exception_handler(request, exc)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        field = loc[0] if loc else "body"
        message = f"{field}: {first.get('msg', 'invalid request')}"
        if field == "files":
            message = "files: at least one frame (the annotated one) is required as a file part"
        return JSONResponse(
            status_code=400, content={"detail": error_detail(message, field), "success": False}
        )

    async def on_form_error(request: Request, exc: Exception) -> Any:
        # Starlette refuses a multipart body it cannot parse or that passes its own caps
        # (1000 files, 1 MB per form field) with a plain-string HTTPException.
        assert isinstance(exc, StarletteHTTPException)
        if not request.url.path.endswith(ROUTE) or not isinstance(exc.detail, str):
            return await http_exception_handler(request, exc)
        text = exc.detail
        field = "files" if "files" in text.lower() else "settings" if "exceeded" in text else "body"
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": error_detail(f"{field}: {text}", field), "success": False},
        )

    server.add_exception_handler(json.JSONDecodeError, on_json_error)
    server.add_exception_handler(StarletteHTTPException, on_form_error)
    server.add_exception_handler(RequestValidationError, on_validation_error)

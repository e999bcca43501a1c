"""Geometries in and out: Supervisely bitmap/polygon JSON <-> one uint8 label mask.

Every input is checked *before* the expensive step it protects (the mask size before it is
inflated, the polygon's extent before it is rasterised), and refused with an ``InputError``
naming the field (``settings.input_geometries[2].bitmap.data``, ``context.figures[0]``) and
the rule. All objects of a request are drawn into one label mask, ids 1..n in request
order, later ones on top (as the SDK does), so one model pass tracks them jointly.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from supervisely.annotation.label import Label
from supervisely.annotation.obj_class import ObjClass
from supervisely.geometry.bitmap import Bitmap
from supervisely.geometry.point_location import PointLocation
from supervisely.geometry.polygon import Polygon

from .validation import InputError

SUPPORTED = ("bitmap", "polygon")


def check_kind(kind: Any, field: str) -> str:
    """Refuse geometry types the app cannot track (rectangles, points, ...)."""
    if kind not in SUPPORTED:
        raise InputError(field, f"must be 'bitmap' or 'polygon', got {kind!r:.60}", 400)
    return str(kind)


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


def decode(kind: str, data: Any, field: str, height: int, width: int) -> Bitmap:
    """One ``{type, data}`` geometry as a frame-sized-checked ``Bitmap``."""
    if not isinstance(data, dict):
        raise InputError(field, "geometry data must be a JSON object", 400)
    if check_kind(kind, field) == "bitmap":
        return _decode_bitmap(data, field, height, width)
    return _decode_polygon(data, field, height, width)


def draw(geometries: Sequence[tuple[str, Any, str]], height: int, width: int) -> np.ndarray:
    """Draw geometry k of ``(kind, data, field)`` with id k+1 into one uint8 label mask;
    later ones cover earlier ones, as in the SDK.

    Each geometry is drawn as soon as it is decoded, so 255 full-frame masks never sit in
    memory together. A figure fully covered by later ones leaves its id missing: ids need
    not be consecutive (``tracking`` compacts them).
    """
    label = np.zeros((height, width), dtype=np.uint8)
    for index, (kind, data, field) in enumerate(geometries):
        decode(kind, data, field, height, width).draw(bitmap=label, color=index + 1)
    return label


# ---------------------------------------------------------------- answers


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


def mask_geometries(
    mask: np.ndarray, obj_id: int, box: tuple[int, int, int, int], kind: str
) -> list[Bitmap | Polygon]:
    """Object ``obj_id`` of ``mask`` as geometries of ``kind`` (a polygon may be several)."""
    top, bottom, left, right = box
    bitmap = Bitmap(mask[top:bottom, left:right] == obj_id, origin=PointLocation(top, left))
    if kind == "polygon":
        label = Label(bitmap, ObjClass("bitmap", Bitmap))
        shapes = [lab.geometry for lab in label.convert(ObjClass("polygon", Polygon))]
    else:
        shapes = [bitmap]
    return shapes


def to_json(shapes: Sequence[Bitmap | Polygon]) -> list[dict[str, Any]]:
    """The ``{type, data}`` form of the tracking answers."""
    return [{"type": shape.geometry_name(), "data": shape.to_json()} for shape in shapes]

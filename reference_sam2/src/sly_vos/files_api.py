"""``POST /track-api-files``: frames uploaded with the request, answered synchronously.

The SDK's handler trusts its input: malformed settings become a 500, a few hundred bytes of
PNG claiming 30000x30000 pixels make it allocate gigabytes, and each geometry costs one model
pass. Here a bad request is refused with ``validation.InputError`` (a field name, a rule, an
HTTP status) *before* the expensive step it protects: counts and settings before the files
are touched, image headers before pixels are decoded, bitmap sizes before masks are
inflated; then all geometries are tracked jointly in one model pass.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile

from . import geometry, limits
from .schemas import FilesSettings, parse
from .validation import InputError, check_frame_size

logger = logging.getLogger(__name__)

# ``supervisely.imaging.image`` sets this to True on import (lenient dataset loading), which
# would decode a truncated upload as a partly grey frame and track on it. A server refuses it.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ROUTE = "/track-api-files"
# Decoders PIL may use for frames; the list keeps exotic plugins (EPS runs Ghostscript) out.
FRAME_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "TIFF")


# ---------------------------------------------------------------- settings


def load_settings(text: str) -> Any:
    """The form field ``settings`` as JSON; malformed JSON is a 400 saying where."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            "settings", f"is not valid JSON ({exc.msg} at char {exc.pos})", 400
        ) from None


def parse_settings(settings: Any, num_files: int) -> FilesSettings:
    """Check the ``settings`` JSON against the uploaded file count."""
    request = parse(FilesSettings, settings, "settings")
    if request.frames != num_files - 1:
        raise InputError(
            "settings.frames",
            f"must equal the number of uploaded files minus one (the annotated frame): "
            f"{num_files} files need frames={num_files - 1}, got {request.frames}",
            422,
        )
    if len(request.input_geometries) > limits.MAX_OBJECTS:
        raise InputError(
            "settings.input_geometries",
            f"{len(request.input_geometries)} geometries exceed the limit "
            f"MAX_OBJECTS={limits.MAX_OBJECTS} per request (objects share one uint8 label mask)",
            413,
        )
    for index, item in enumerate(request.input_geometries):
        geometry.check_kind(item.type, f"settings.input_geometries[{index}].type")
    return request


def input_label(request: FilesSettings, height: int, width: int) -> np.ndarray:
    """All input geometries drawn into one label mask (ids 1..n in request order)."""
    return geometry.draw(
        [
            (item.type, item.data, f"settings.input_geometries[{index}]")
            for index, item in enumerate(request.input_geometries)
        ],
        height,
        width,
    )


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
        check_frame_size(height, width, field)
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


# ---------------------------------------------------------------- answer


def build_response(masks: Sequence[np.ndarray], kinds: Sequence[str]) -> list[list[dict[str, Any]]]:
    """The SDK's answer: per frame after the first, the geometries in input order, typed like
    the input (a polygon may come back as several), empty masks left out."""
    results: list[list[dict[str, Any]]] = []
    for mask in masks[1:]:
        boxes = geometry.object_boxes(mask)
        frame: list[dict[str, Any]] = []
        for obj_id, kind in enumerate(kinds, start=1):
            if obj_id in boxes:
                frame.extend(
                    geometry.to_json(geometry.mask_geometries(mask, obj_id, boxes[obj_id], kind))
                )
        results.append(frame)
    return results

"""Call a served app's ``/track-api-files`` the way a Supervisely client does.

Encodes frames and first-frame masks into the multipart request, and turns the answer (per
frame after the first, one geometry per tracked object that is still visible) back into
label masks. Used by the app's tests, the demo and the benchmarks; handy for scripting
against a running session too.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import requests
from PIL import Image
from supervisely.annotation.label import Label
from supervisely.annotation.obj_class import ObjClass
from supervisely.geometry.bitmap import Bitmap
from supervisely.geometry.helpers import deserialize_geometry
from supervisely.geometry.polygon import Polygon

REQUEST_TIMEOUT_S = 120.0


def encode_frame(frame: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode an image array (HxWx3 RGB, HxW gray, HxWx4 RGBA) as PNG or JPEG bytes."""
    buffer = io.BytesIO()
    options = {"quality": 95} if fmt.upper() == "JPEG" else {}
    Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def bitmap_geometry(mask: np.ndarray) -> dict[str, Any]:
    """A frame-sized boolean mask as the ``{"type", "data"}`` input geometry of the API."""
    return {"type": "bitmap", "data": Bitmap(np.asarray(mask, dtype=bool)).to_json()}


def polygon_geometries(mask: np.ndarray) -> list[dict[str, Any]]:
    """A mask as polygon input geometries (one per connected part)."""
    label = Label(Bitmap(np.asarray(mask, dtype=bool)), ObjClass("bitmap", Bitmap))
    return [
        {"type": "polygon", "data": lab.geometry.to_json()}
        for lab in label.convert(ObjClass("polygon", Polygon))
    ]


def track_settings(num_files: int, geometries: list[dict[str, Any]], **extra: Any) -> dict:
    """The ``settings`` form field for ``num_files`` frames (the first one annotated)."""
    return {"frame_index": 0, "frames": num_files - 1, "input_geometries": geometries, **extra}


def post_track(
    base_url: str,
    files: Sequence[bytes],
    settings: dict[str, Any] | str,
    *,
    session: requests.Session | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
    content_type: str = "image/png",
) -> requests.Response:
    """POST ``/track-api-files``: ``files`` parts in order, ``settings`` as a JSON form field
    (a ``str`` is sent as is, to test malformed JSON)."""
    parts = [
        ("files", (f"frame_{index:05d}", data, content_type)) for index, data in enumerate(files)
    ]
    form = {"settings": settings if isinstance(settings, str) else json.dumps(settings)}
    sender = session if session is not None else requests
    return sender.post(f"{base_url}/track-api-files", files=parts, data=form, timeout=timeout)


def clip_request(
    frames: Sequence[np.ndarray], first_mask: np.ndarray, ids: Sequence[int], fmt: str = "PNG"
) -> tuple[list[bytes], dict[str, Any]]:
    """Encoded frames and settings tracking each of ``ids`` (one bitmap per object)."""
    files = [encode_frame(frame, fmt) for frame in frames]
    geometries = [bitmap_geometry(first_mask == obj_id) for obj_id in ids]
    return files, track_settings(len(files), geometries)


def geometry_mask(item: dict[str, Any], height: int, width: int) -> np.ndarray:
    """One answered ``{"type", "data"}`` geometry drawn as an HxW boolean mask."""
    geometry = deserialize_geometry(item["type"], item["data"])
    canvas = np.zeros((height, width), dtype=np.uint8)
    geometry.draw(bitmap=canvas, color=1)
    return canvas.astype(bool)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def answer_to_label_masks(
    answer: list[list[dict[str, Any]]],
    first_mask: np.ndarray,
    ids: Sequence[int],
) -> list[np.ndarray]:
    """Turn an answer for one-bitmap-per-object input back into label masks (frame 0 = input).

    The API keeps input order but leaves out objects lost on a frame; when a frame has fewer
    geometries than objects, the ones present are matched, order kept, to the objects they
    overlap most on the previous frame.
    """
    height, width = first_mask.shape
    previous = [first_mask == obj_id for obj_id in ids]
    labels = [first_mask.astype(np.uint8)]
    for frame_items in answer:
        masks = [geometry_mask(item, height, width) for item in frame_items]
        if len(masks) > len(ids):
            raise AssertionError(f"{len(masks)} geometries on a frame for {len(ids)} objects")
        choices = list(itertools.combinations(range(len(ids)), len(masks)))
        scores = [
            sum(_overlap(previous[k], m) for k, m in zip(chosen, masks, strict=True))
            for chosen in choices
        ]
        best = choices[int(np.argmax(scores))]
        label = np.zeros((height, width), dtype=np.uint8)
        current = [np.zeros((height, width), dtype=bool) for _ in ids]
        for k, mask in zip(best, masks, strict=True):
            label[mask] = ids[k]
            current[k] = mask
        previous = [cur if cur.any() else prev for cur, prev in zip(current, previous, strict=True)]
        labels.append(label)
    return labels


def track_over_http(
    base_url: str,
    frames: Sequence[np.ndarray],
    first_mask: np.ndarray,
    ids: Sequence[int],
    *,
    fmt: str = "PNG",
    timeout: float = REQUEST_TIMEOUT_S,
) -> list[np.ndarray]:
    """Track ``ids`` of ``first_mask`` through ``frames`` on a served app; label masks back."""
    files, settings = clip_request(frames, first_mask, ids, fmt)
    response = post_track(base_url, files, settings, timeout=timeout)
    response.raise_for_status()
    return answer_to_label_masks(response.json(), first_mask, ids)

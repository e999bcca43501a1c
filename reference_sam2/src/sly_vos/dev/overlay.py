"""Visual output of a tracking run: an animated GIF and a contact sheet PNG.

Numbers alone hide failure modes (drift, id swaps, leaks onto the background); a look at the
masks over the frames shows them at once. Every id keeps one colour in every file.
"""

from __future__ import annotations

import colorsys
import math
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ALPHA = 0.5  # weight of the object colour over the frame
GIF_MAX_SIDE = 480  # GIF frames are downscaled to this long side (file size)
GIF_FRAME_MS = 100
THUMB_MAX_SIDE = 200  # contact-sheet thumbnails
SHEET_MAX_FRAMES = 24  # more frames are sampled evenly (first and last always shown)
SHEET_COLUMNS = 6
MIN_LONG_SIDE = 256  # smaller frames are enlarged by an integer factor first


def id_color(obj_id: int) -> tuple[int, int, int]:
    """A fixed, bright RGB colour per id: golden-ratio hue steps keep neighbours apart."""
    hue = (int(obj_id) * 0.618033988749895) % 1.0
    value = 1.0 if obj_id % 2 else 0.8
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
    return int(r * 255), int(g * 255), int(b * 255)


def _check(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
    if len(frames) == 0:
        raise ValueError("frames: at least one frame is required")
    if len(frames) != len(masks):
        raise ValueError(f"masks: {len(masks)} masks for {len(frames)} frames")
    for index, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames[{index}]: must be HxWx3 uint8, got {frame.shape}")
        if frame.shape != frames[0].shape:
            raise ValueError(f"frames[{index}]: shape {frame.shape} differs from frames[0]")
        if mask.shape != frame.shape[:2]:
            raise ValueError(f"masks[{index}]: shape {mask.shape} differs from its frame")


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "video"


def _outlined_text(image: np.ndarray, text: str, org: tuple[int, int], scale: float) -> None:
    thickness = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, text, org, font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, org, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def render(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One overlay image: colours blended over the objects, outlines, id at each centroid."""
    out = frame.astype(np.float32)
    ids = [int(i) for i in np.unique(mask) if i != 0]
    for obj_id in ids:
        where = mask == obj_id
        out[where] = (1 - ALPHA) * out[where] + ALPHA * np.array(id_color(obj_id), np.float32)
    image = np.clip(out, 0, 255).astype(np.uint8)
    scale = max(0.3, min(image.shape[:2]) / 400)
    for obj_id in ids:
        where = (mask == obj_id).astype(np.uint8)
        contours, _ = cv2.findContours(where, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, id_color(obj_id), max(1, round(scale * 2)))
        moments = cv2.moments(where, binaryImage=True)
        if moments["m00"] > 0:
            cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
            text = str(obj_id)
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            _outlined_text(image, text, (int(cx - tw / 2), int(cy + th / 2)), scale)
    return image


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    factor = max_side / max(height, width)
    if factor >= 1:
        return image
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def sheet_indices(count: int, limit: int = SHEET_MAX_FRAMES) -> list[int]:
    """Frame indices on the contact sheet: all, or ``limit`` evenly spread incl. first/last."""
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def write_overlays(
    frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], out_dir: Path, name: str
) -> tuple[Path, Path]:
    """Write ``<name>.gif`` (animation) and ``<name>_sheet.png`` (numbered thumbnails) in
    ``out_dir``; return both paths."""
    _check(frames, masks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _safe_name(name)
    gif_path = out_dir / f"{stem}.gif"
    sheet_path = out_dir / f"{stem}_sheet.png"

    picked = set(sheet_indices(len(frames)))
    gif_frames: list[Image.Image] = []
    thumbs: list[tuple[int, np.ndarray]] = []
    zoom = max(1, MIN_LONG_SIDE // max(frames[0].shape[:2]))
    for index, (frame, mask) in enumerate(zip(frames, masks, strict=True)):
        if zoom > 1:  # small clips: enlarge (nearest) so outlines and ids stay readable
            frame = np.repeat(np.repeat(frame, zoom, axis=0), zoom, axis=1)
            mask = np.repeat(np.repeat(mask, zoom, axis=0), zoom, axis=1)
        image = render(frame, mask)
        gif_frames.append(Image.fromarray(_fit(image, GIF_MAX_SIDE)))
        if index in picked:
            thumbs.append((index, _fit(image, THUMB_MAX_SIDE)))
    gif_frames[0].save(
        gif_path,
        save_all=True,
        append_images=gif_frames[1:],
        duration=GIF_FRAME_MS,
        loop=0,
        optimize=False,
    )
    Image.fromarray(_contact_sheet(thumbs)).save(sheet_path, optimize=True)
    return gif_path, sheet_path


def _contact_sheet(thumbs: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Grid of thumbnails, each with its frame number, on a dark background."""
    height, width = thumbs[0][1].shape[:2]
    gap = 4
    columns = min(SHEET_COLUMNS, len(thumbs))
    rows = math.ceil(len(thumbs) / columns)
    sheet = np.full(
        (rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 32, dtype=np.uint8
    )
    scale = max(0.3, height / 250)
    for slot, (index, thumb) in enumerate(thumbs):
        top = gap + (slot // columns) * (height + gap)
        left = gap + (slot % columns) * (width + gap)
        tile = thumb.copy()
        _outlined_text(tile, f"#{index}", (3, 3 + round(22 * scale)), scale)
        sheet[top : top + height, left : left + width] = tile
    return sheet

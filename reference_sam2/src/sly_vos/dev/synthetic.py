"""Deterministic synthetic video clips with exact ground-truth masks.

Tests, the demo and the bundled ``sample/`` need clips whose answer is known without
downloading a dataset. Each clip has textured shapes (ellipse, polygon, deforming blob)
moving 1-3 px per frame over a textured background; the first two cross, so one passes over
the other. Depth order is the order of ``ids`` (last is in front) and occluded pixels belong
to the front object in the ground truth.

This module imports nothing from its package, so scripts can load it by file path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SHAPE_KINDS = ("ellipse", "polygon", "blob")
MIN_SIDE = 32


@dataclass
class Clip:
    """A clip: RGB frames, ground-truth label maps with the requested ids, and a name."""

    frames: list[np.ndarray]  # HxWx3 uint8 RGB
    masks: list[np.ndarray]  # HxW uint8, 0 = background
    name: str
    ids: tuple[int, ...] = field(default=())


@dataclass
class _Object:
    kind: str
    radius: float
    sprite: np.ndarray  # SxSx3 float32 texture in sprite coordinates
    points: np.ndarray  # Px2 unit outline (polygon kind only)
    start: np.ndarray  # (x, y) of the sprite centre at frame 0
    velocity: np.ndarray  # (vx, vy) px/frame
    spin: float  # radians per frame
    phase: float


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Value noise: random values on a coarse grid, bicubic-upsampled to HxWx3 in [0, 1]."""
    gh, gw = max(2, height // cell + 2), max(2, width // cell + 2)
    coarse = rng.random((gh, gw, 3), dtype=np.float32)
    big = cv2.resize(coarse, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:height, :width], 0.0, 1.0)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Static textured background: two scales of smooth noise plus oblique stripes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(9.0, 15.0)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * phase)
    coarse = _smooth_noise(rng, height, width, 16)
    base = 0.55 * coarse + 0.25 * _smooth_noise(rng, height, width, 4)
    tint = rng.uniform(0.3, 0.7, size=3).astype(np.float32)
    img = 0.6 * base + 0.2 * stripes[..., None] * tint + 0.1
    return np.clip(img * 255.0, 0, 255).astype(np.float32)


def _sprite_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Object texture: a saturated base colour with a checker and fine noise, so flow can latch."""
    yy, xx = np.mgrid[0:size, 0:size]
    color = rng.uniform(40, 255, size=3).astype(np.float32)
    color[rng.integers(0, 3)] = rng.uniform(0, 60)  # keep it saturated, unlike the background
    cell = int(rng.integers(4, 7))
    checker = (((xx // cell) + (yy // cell)) % 2).astype(np.float32)
    noise = _smooth_noise(rng, size, size, 3)
    tex = color * (0.65 + 0.2 * checker[..., None]) + 70.0 * (noise - 0.5)
    return np.clip(tex, 0, 255).astype(np.float32)


def _polygon_outline(rng: np.random.Generator) -> np.ndarray:
    """A random polygon (5-7 vertices, evenly spread angles with jitter) around the unit circle."""
    count = int(rng.integers(5, 8))
    step = 2 * math.pi / count
    angles = rng.uniform(0, step) + step * np.arange(count) + rng.uniform(-0.25, 0.25, count) * step
    radii = rng.uniform(0.65, 1.0, size=count)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _shape_mask(obj: _Object, t: int) -> np.ndarray:
    """Soft (anti-aliased) shape mask in sprite coordinates, float32 in [0, 1]."""
    size = obj.sprite.shape[0]
    centre = (size - 1) / 2.0
    r = obj.radius
    if obj.kind == "ellipse":
        theta = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        pts = np.stack([r * np.cos(theta), 0.65 * r * np.sin(theta)], axis=1)
    elif obj.kind == "polygon":
        pts = obj.points * r
    else:  # blob: the outline breathes over time
        theta = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        rho = r * (
            0.85
            + 0.12 * np.sin(3 * theta + 0.35 * t + obj.phase)
            + 0.06 * np.sin(5 * theta - 0.25 * t)
        )
        pts = np.stack([rho * np.cos(theta), rho * np.sin(theta)], axis=1)
    shift = 4  # sub-pixel vertex precision for fillPoly
    fixed = np.round((pts + centre) * (1 << shift)).astype(np.int32)
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(mask, [fixed], 255, lineType=cv2.LINE_AA, shift=shift)
    return mask.astype(np.float32) / 255.0


def _bounce(start: float, velocity: float, t: int, low: float, high: float) -> float:
    """Position at frame t moving at constant speed, reflected at [low, high]."""
    span = high - low
    if span <= 0:
        return low
    pos = (start - low + velocity * t) % (2 * span)
    return low + (pos if pos <= span else 2 * span - pos)


def _position(obj: _Object, t: int, height: int, width: int) -> tuple[float, float]:
    margin = obj.radius * 0.5
    x = _bounce(obj.start[0], obj.velocity[0], t, margin, width - 1 - margin)
    y = _bounce(obj.start[1], obj.velocity[1], t, margin, height - 1 - margin)
    return x, y


def _make_objects(
    rng: np.random.Generator, count: int, num_frames: int, height: int, width: int
) -> list[_Object]:
    side = min(height, width)
    objects: list[_Object] = []
    # The first two start on opposite sides of the same band and cross at ~55% of the clip.
    cross_t = max(1.0, 0.55 * (num_frames - 1))
    band = height * rng.uniform(0.4, 0.6)
    for index in range(count):
        kind = SHAPE_KINDS[index % len(SHAPE_KINDS)]
        radius = side * rng.uniform(0.14, 0.2)
        size = int(math.ceil(2.4 * radius)) | 1
        if index < 2:
            direction = 1.0 if index == 0 else -1.0
            distance = min(width * 0.5, 3.0 * cross_t)
            speed = float(np.clip(distance / cross_t, 1.0, 3.0))
            start_x = width / 2.0 - direction * speed * cross_t
            start = np.array([start_x, band + (index - 0.5) * 0.06 * height])
            velocity = np.array([direction * speed, rng.uniform(-0.3, 0.3)])
        else:
            start = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height])
            angle = rng.uniform(0, 2 * math.pi)
            speed = rng.uniform(1.0, 3.0)
            velocity = np.array([speed * math.cos(angle), speed * math.sin(angle)])
        objects.append(
            _Object(
                kind=kind,
                radius=float(radius),
                sprite=_sprite_texture(rng, size),
                points=_polygon_outline(rng),
                start=start.astype(np.float64),
                velocity=velocity.astype(np.float64),
                spin=float(rng.uniform(-0.03, 0.03)),
                phase=float(rng.uniform(0, 2 * math.pi)),
            )
        )
    return objects


def _check_args(num_frames: int, height: int, width: int, ids: tuple[int, ...]) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames: must be >= 1, got {num_frames}")
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(f"height/width: must be >= {MIN_SIDE}, got {height}x{width}")
    if not ids:
        raise ValueError("ids: at least one object id is required")
    if len(set(ids)) != len(ids):
        raise ValueError(f"ids: must be unique, got {ids}")
    if any(not 1 <= int(i) <= 255 for i in ids):
        raise ValueError(f"ids: must be in 1..255, got {ids}")


def make_clip(
    num_frames: int = 20,
    height: int = 96,
    width: int = 128,
    ids: tuple[int, ...] = (3, 7),
    seed: int = 0,
    name: str = "clip",
) -> Clip:
    """Render a deterministic clip; the same arguments always give the same pixels."""
    ids = tuple(int(i) for i in ids)
    _check_args(num_frames, height, width, ids)
    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    objects = _make_objects(rng, len(ids), num_frames, height, width)
    noise_rng = np.random.default_rng(seed + 7919)
    frames: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for t in range(num_frames):
        image = background.copy()
        label = np.zeros((height, width), dtype=np.uint8)
        for obj_id, obj in zip(ids, objects, strict=True):  # back to front
            size = obj.sprite.shape[0]
            centre = (size - 1) / 2.0
            x, y = _position(obj, t, height, width)
            angle_deg = math.degrees(obj.spin * t)
            matrix = cv2.getRotationMatrix2D((centre, centre), angle_deg, 1.0)
            matrix[:, 2] += (x - centre, y - centre)
            alpha = cv2.warpAffine(
                _shape_mask(obj, t), matrix, (width, height), flags=cv2.INTER_LINEAR
            )
            texture = cv2.warpAffine(
                obj.sprite,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            image = image * (1.0 - alpha[..., None]) + texture * alpha[..., None]
            label[alpha >= 0.5] = obj_id
        image += noise_rng.normal(0.0, 1.0, size=image.shape).astype(np.float32)
        frames.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
        masks.append(label)
    return Clip(frames=frames, masks=masks, name=name, ids=ids)


# Frame shapes the limits allow that break naive code (OpenCV's 32767-px remap, a one-pixel
# side): every endpoint must track them or refuse them with a JSON 4xx, never a 500.
ODD_SHAPES: tuple[tuple[int, int], ...] = ((1, 300), (300, 1), (2, 6000))


def strip_clip(height: int, width: int, num_frames: int = 3, obj_id: int = 1) -> Clip:
    """A clip of any shape, however thin (``make_clip`` needs ``MIN_SIDE``): a gradient with
    one object, the first third of the long side, sliding by one pixel a frame."""
    long_side = max(height, width)
    ramp = np.linspace(0, 255, long_side, dtype=np.float32)
    frames, masks = [], []
    for t in range(num_frames):
        line = np.roll(ramp, t).astype(np.uint8)
        start, stop = t, t + max(1, long_side // 3)
        label = np.zeros(long_side, np.uint8)
        label[start:stop] = obj_id
        shape = (height, width) if height <= width else (width, height)
        image = np.broadcast_to(np.stack([line, 255 - line, line // 2], axis=-1), shape + (3,))
        mask = np.broadcast_to(label, shape)
        if height > width:
            image, mask = image.transpose(1, 0, 2), mask.T
        frames.append(np.ascontiguousarray(image))
        masks.append(np.ascontiguousarray(mask))
    return Clip(frames=frames, masks=masks, name=f"strip-{height}x{width}", ids=(obj_id,))


def iou(pred: np.ndarray, gt: np.ndarray, obj_id: int) -> float:
    """Jaccard index of one object; 1.0 when the object is absent from both masks."""
    if pred.shape != gt.shape:
        raise ValueError(f"pred: shape {pred.shape} differs from gt shape {gt.shape}")
    p = pred == obj_id
    g = gt == obj_id
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & g)) / float(union)


def mean_j(preds: list[np.ndarray], gts: list[np.ndarray], ids) -> float:
    """Mean J over frames 1..N-1 (frame 0 is the prompt), averaged per object then over objects."""
    if len(preds) != len(gts):
        raise ValueError(f"preds: {len(preds)} masks for {len(gts)} ground-truth frames")
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError("ids: at least one object id is required")
    if len(gts) < 2:
        raise ValueError("gts: at least two frames are needed (frame 0 is not scored)")
    pairs = list(zip(preds[1:], gts[1:], strict=True))
    per_object = [float(np.mean([iou(p, g, obj_id) for p, g in pairs])) for obj_id in ids]
    return float(np.mean(per_object))


def davis_palette() -> list[int]:
    """The usual VOS annotation palette (id bits spread over R, G, B), flat 768 values."""
    palette: list[int] = []
    for index in range(256):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette.extend((r, g, b))
    return palette


def save_label_png(mask: np.ndarray, path: Path) -> None:
    """Write a label map as a palette PNG whose pixel indices are the raw object ids."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.fromarray(mask)  # "L"; putpalette turns it into "P" with the same indices
    entries = max(2, int(mask.max()) + 1)  # a short palette keeps small files small
    image.putpalette(davis_palette()[: 3 * entries])
    image.save(path, format="PNG", optimize=True)


def write_davis(clips: list[Clip], root: Path) -> Path:
    """Write clips in the DAVIS layout: ``JPEGImages/<name>/00000.jpg`` (quality 95) and
    ``Annotations/<name>/00000.png`` (palette PNG, raw ids). Returns ``root``."""
    root = Path(root)
    names = [clip.name for clip in clips]
    if len(set(names)) != len(names):
        raise ValueError(f"clips: names must be unique, got {names}")
    for clip in clips:
        image_dir = root / "JPEGImages" / clip.name
        mask_dir = root / "Annotations" / clip.name
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        for index, (frame, mask) in enumerate(zip(clip.frames, clip.masks, strict=True)):
            Image.fromarray(frame).save(image_dir / f"{index:05d}.jpg", quality=95)
            save_label_png(mask, mask_dir / f"{index:05d}.png")
    return root


# The app's bundled sample (``<app>/sample``): (name, make_clip arguments) of each clip:
# two crossing shapes, three objects, sparse ids.
SAMPLE_CLIPS: tuple[tuple[str, dict], ...] = (
    ("crossing", dict(num_frames=12, height=96, width=128, ids=(3, 7), seed=0)),
    ("three-objects", dict(num_frames=12, height=80, width=112, ids=(1, 2, 5), seed=2)),
    ("sparse-ids", dict(num_frames=12, height=80, width=112, ids=(4, 12), seed=4)),
)


def write_sample(root: Path) -> Path:
    """Write the bundled sample (deterministic: the same bytes every time) to ``root``."""
    clips = [make_clip(name=name, **kwargs) for name, kwargs in SAMPLE_CLIPS]
    return write_davis(clips, root)

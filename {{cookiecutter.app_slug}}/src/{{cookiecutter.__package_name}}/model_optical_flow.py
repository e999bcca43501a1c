"""Starter model: propagate the first-frame label mask with dense optical flow (OpenCV DIS).

No weights, no GPU: the app tracks out of the box, so the serving side can be tried end to
end before a real model is plugged in. Replace this file with your model; keep the contract
(``WEIGHTS_REQUIRED``, ``Tracker(weights_path, device)``, ``Tracker.track`` reading frames
from an iterator and yielding one mask per frame, ``make_test_weights``; the stub starter's
docstring spells it out).

How a frame is labelled (all at a working resolution with short side <= ``WORK_SHORT_SIDE``):

1. Backward flow (frame t -> t-1) warps the previous labels into frame t, so every pixel of
   frame t gets a label (no holes, occlusions handled: the front object's pixels follow it).
2. Forward-backward consistency finds the pixels that have no source in frame t-1 (they were
   hidden: background uncovered behind a moving object, an object re-emerging). Warping gives
   them a wrong label, so they, and a thin band along every label boundary where flow smears,
   are decided by appearance instead: per-label colour histograms (from frame 0, slowly
   updated), restricted to labels predicted nearby, overruling the flow only when clearly
   likelier (``SWITCH_MARGIN``).
3. Small stray fragments of an object (less than ``KEEP_FRACTION`` of its largest part) are
   dropped, so an error does not survive on a static background.
4. Labels are brought back to full resolution with bilinear one-hot upsampling (smooth edges).

Memory is bounded: only the previous grey frame and label map are kept, never all flows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

WEIGHTS_REQUIRED = False

WORK_SHORT_SIDE = 360  # frames are downscaled so their short side is at most this
MIN_WORK_SHORT_SIDE = 32  # tiny frames are upscaled to this, DIS needs a few patches
MAX_WORK_SIDE = 4096  # and no side is longer (OpenCV's remap stops at 32767 px): a strip
# such as 2x6000 is worked on at 32x4096, squeezed along its length only
COLOR_BINS = 8  # per RGB channel -> 512-bin colour histograms
FB_ABS = 0.5  # forward-backward check: squared error allowed (px^2) ...
FB_REL = 0.01  # ... plus this fraction of the squared flow magnitudes
EDGE_BAND = 2  # px around label boundaries decided by appearance
NEAR_RADIUS = 8  # an object may claim pixels at most this far from where flow put it
KEEP_FRACTION = 0.5  # drop fragments smaller than this fraction of the object's main part
HIST_UPDATE = 0.03  # weight of the current frame in the running colour histograms
SWITCH_MARGIN = 1.5  # appearance must be this many times likelier to overrule the flow


class Tracker:
    """Dense-optical-flow mask propagation; ``device`` is accepted and unused (CPU OpenCV)."""

    def __init__(self, weights_path: Path | None, device: str) -> None:
        self.weights_path = weights_path
        self.device = device

    def track(self, frames: Iterable[np.ndarray], label_mask: np.ndarray) -> Iterator[np.ndarray]:
        """Yield one HxW uint8 label map per frame, as soon as it is computed; the first is
        ``label_mask`` itself. Only the previous frame is kept."""
        frames = iter(frames)
        height, width = label_mask.shape
        label_mask = label_mask.astype(np.uint8, copy=False)
        num_labels = int(label_mask.max()) + 1
        first = next(frames)
        yield label_mask.copy()
        work = _work_size(height, width)
        upsample = _Upsampler((height, width), work)
        flow = _make_flow()
        prev_rgb = _resize_rgb(first, work)
        prev_gray = cv2.cvtColor(prev_rgb, cv2.COLOR_RGB2GRAY)
        labels = _resize_labels(label_mask, work, num_labels)
        hists = _AppearanceModel(num_labels, prev_rgb, labels)
        grid_x, grid_y = np.meshgrid(
            np.arange(work[0], dtype=np.float32), np.arange(work[1], dtype=np.float32)
        )
        for frame in frames:
            rgb = _resize_rgb(frame, work)
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            backward = flow.calc(gray, prev_gray, None)
            forward = flow.calc(prev_gray, gray, None)
            map_x = grid_x + backward[..., 0]
            map_y = grid_y + backward[..., 1]
            warped = _warp_labels(labels, map_x, map_y, num_labels)
            unsure = _inconsistent(backward, forward, map_x, map_y) | _boundary_band(warped)
            bins = hists.bins(rgb)
            labels = _relabel(warped, unsure, bins, hists, num_labels)
            labels = _drop_fragments(labels, num_labels)
            hists.update(bins, labels, ~unsure)
            yield upsample(labels, num_labels)
            prev_gray = gray


def make_test_weights(directory: Path) -> Path | None:
    """The optical-flow starter needs no weights."""
    return None


def _work_size(height: int, width: int) -> tuple[int, int]:
    """(width, height) of the working resolution."""
    short = min(height, width)
    scale = 1.0
    if short > WORK_SHORT_SIDE:
        scale = WORK_SHORT_SIDE / short
    elif short < MIN_WORK_SHORT_SIDE:
        scale = MIN_WORK_SHORT_SIDE / short
    return (
        min(MAX_WORK_SIDE, max(1, round(width * scale))),
        min(MAX_WORK_SIDE, max(1, round(height * scale))),
    )


def _make_flow() -> cv2.DISOpticalFlow:
    """DIS at full working resolution: the presets start at half resolution, too coarse for
    small objects; 8 px patches every 4 px keep 640x360 well under 0.1 s per flow."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    dis.setPatchSize(8)
    dis.setPatchStride(4)
    return dis


def _resize_rgb(frame: np.ndarray, work: tuple[int, int]) -> np.ndarray:
    if (frame.shape[1], frame.shape[0]) == work:
        return np.ascontiguousarray(frame)
    shrink = work[0] < frame.shape[1]
    return cv2.resize(frame, work, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _resize_labels(labels: np.ndarray, work: tuple[int, int], num_labels: int) -> np.ndarray:
    """Area-weighted downscale of a label map (argmax of resized one-hot planes)."""
    if (labels.shape[1], labels.shape[0]) == work:
        return labels.copy()
    best = np.full((work[1], work[0]), -1.0, dtype=np.float32)
    out = np.zeros((work[1], work[0]), dtype=np.uint8)
    for k in range(num_labels):
        plane = (labels == k).astype(np.float32)
        if k and not plane.any():
            continue
        plane = cv2.resize(plane, work, interpolation=cv2.INTER_AREA)
        better = plane > best
        out[better] = k
        best[better] = plane[better]
    return out


def _warp_labels(
    labels: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, num_labels: int
) -> np.ndarray:
    """Backward-warp a label map: bilinear warp of each one-hot plane, then argmax."""
    best = np.full(labels.shape, -1.0, dtype=np.float32)
    out = np.zeros(labels.shape, dtype=np.uint8)
    for k in range(num_labels):
        plane = (labels == k).astype(np.float32)
        if k and not plane.any():
            continue
        plane = cv2.remap(plane, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        better = plane > best
        out[better] = k
        best[better] = plane[better]
    return out


def _inconsistent(
    backward: np.ndarray, forward: np.ndarray, map_x: np.ndarray, map_y: np.ndarray
) -> np.ndarray:
    """Pixels of frame t whose backward flow is not undone by the forward flow (no source)."""
    forward_at = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    error = np.sum((backward + forward_at) ** 2, axis=-1)
    magnitude = np.sum(backward**2, axis=-1) + np.sum(forward_at**2, axis=-1)
    return error > FB_REL * magnitude + FB_ABS


def _boundary_band(labels: np.ndarray) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EDGE_BAND + 1,) * 2)
    return cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, kernel) > 0


class _AppearanceModel:
    """One colour histogram per label (background included), kept as probabilities."""

    def __init__(self, num_labels: int, rgb: np.ndarray, labels: np.ndarray) -> None:
        bins = self.bins(rgb)
        self.hists = np.stack([self._hist(bins, labels == k) for k in range(num_labels)])

    @staticmethod
    def bins(rgb: np.ndarray) -> np.ndarray:
        q = (rgb.astype(np.int32) * COLOR_BINS) >> 8
        return (q[..., 0] * COLOR_BINS + q[..., 1]) * COLOR_BINS + q[..., 2]

    @staticmethod
    def _hist(bins: np.ndarray, where: np.ndarray) -> np.ndarray:
        counts = np.bincount(bins[where], minlength=COLOR_BINS**3).astype(np.float32) + 0.5
        return counts / counts.sum()

    def likelihood(self, label: int, bins: np.ndarray) -> np.ndarray:
        return self.hists[label][bins]

    def update(self, bins: np.ndarray, labels: np.ndarray, trusted: np.ndarray) -> None:
        for k in range(len(self.hists)):
            where = trusted & (labels == k)
            if np.count_nonzero(where) > 20:
                current = self._hist(bins, where)
                self.hists[k] = (1 - HIST_UPDATE) * self.hists[k] + HIST_UPDATE * current


def _relabel(
    warped: np.ndarray,
    unsure: np.ndarray,
    bins: np.ndarray,
    hists: _AppearanceModel,
    num_labels: int,
) -> np.ndarray:
    """Keep the warped label where flow is trusted; elsewhere pick the most likely colour
    among the labels predicted within ``NEAR_RADIUS`` (background is always allowed)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * NEAR_RADIUS + 1,) * 2)
    best = hists.likelihood(0, bins)
    choice = np.zeros(warped.shape, dtype=np.uint8)
    kept = np.where(warped == 0, best, 0.0)  # likelihood of the warped label
    for k in range(1, num_labels):
        present = (warped == k).astype(np.uint8)
        if not present.any():
            continue
        likely = hists.likelihood(k, bins)
        kept = np.where(warped == k, likely, kept)
        near = cv2.dilate(present, kernel) > 0
        score = np.where(near, likely, 0.0)
        better = score > best
        choice[better] = k
        best = np.where(better, score, best)
    switch = unsure & (best > SWITCH_MARGIN * kept)
    return np.where(switch, choice, warped).astype(np.uint8)


def _drop_fragments(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """Set to background the parts of an object much smaller than its largest part."""
    for k in range(1, num_labels):
        present = (labels == k).astype(np.uint8)
        count, parts, stats, _ = cv2.connectedComponentsWithStats(present, connectivity=8)
        if count <= 2:
            continue
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = np.zeros(count, dtype=bool)
        keep[1:] = areas >= KEEP_FRACTION * areas.max()
        labels[(present > 0) & ~keep[parts]] = 0
    return labels


class _Upsampler:
    """Working-resolution labels -> full resolution with bilinear one-hot planes, per object
    bounding box so memory stays at a few full-size planes whatever the object count."""

    def __init__(self, full: tuple[int, int], work: tuple[int, int]) -> None:
        self.full = full
        self.work = work
        height, width = full
        self.same = (width, height) == work
        # Centre of full-resolution pixel i in working coordinates (as cv2.resize maps it).
        self.src_x = ((np.arange(width) + 0.5) * (work[0] / width) - 0.5).astype(np.float32)
        self.src_y = ((np.arange(height) + 0.5) * (work[1] / height) - 0.5).astype(np.float32)

    def __call__(self, labels: np.ndarray, num_labels: int) -> np.ndarray:
        if self.same:
            return labels.copy()
        out = np.zeros(self.full, dtype=np.uint8)
        for k in range(1, num_labels):
            plane = (labels == k).astype(np.float32)
            ys, xs = np.nonzero(plane)
            if ys.size == 0:
                continue
            x0, x1 = self._span(self.src_x, xs.min(), xs.max())
            y0, y1 = self._span(self.src_y, ys.min(), ys.max())
            map_x = np.broadcast_to(self.src_x[x0:x1][None, :], (y1 - y0, x1 - x0))
            map_y = np.broadcast_to(self.src_y[y0:y1][:, None], (y1 - y0, x1 - x0))
            up = cv2.remap(
                plane,
                np.ascontiguousarray(map_x),
                np.ascontiguousarray(map_y),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            region = out[y0:y1, x0:x1]
            region[up > 0.5] = k
        return out

    @staticmethod
    def _span(src: np.ndarray, low: int, high: int) -> tuple[int, int]:
        """Full-resolution index range whose samples can touch working pixels low..high."""
        start = min(int(np.searchsorted(src, low - 1.0, side="right")), src.size - 1)
        stop = int(np.searchsorted(src, high + 1.0, side="left"))
        return start, max(stop, start + 1)

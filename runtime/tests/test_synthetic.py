"""The synthetic clips (ground truth the other tests rely on) and the overlay writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sly_vos.dev import overlay, synthetic


@pytest.fixture(scope="module")
def clip() -> synthetic.Clip:
    return synthetic.make_clip(num_frames=20, ids=(3, 7), seed=0)


def test_clip_shapes_and_ids(clip: synthetic.Clip) -> None:
    assert len(clip.frames) == len(clip.masks) == 20
    assert clip.ids == (3, 7)
    for frame, mask in zip(clip.frames, clip.masks, strict=True):
        assert frame.shape == (96, 128, 3) and frame.dtype == np.uint8
        assert mask.shape == (96, 128) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 3, 7}
    assert set(np.unique(clip.masks[0])) == {0, 3, 7}


def test_deterministic() -> None:
    a = synthetic.make_clip(num_frames=4, seed=5)
    b = synthetic.make_clip(num_frames=4, seed=5)
    c = synthetic.make_clip(num_frames=4, seed=6)
    for x, y in zip(a.frames + a.masks, b.frames + b.masks, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.frames[0], c.frames[0])


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def test_objects_move_and_the_front_one_occludes(clip: synthetic.Clip) -> None:
    areas_back = [int(np.count_nonzero(m == 3)) for m in clip.masks]
    areas_front = [int(np.count_nonzero(m == 7)) for m in clip.masks]
    # The back object (3) is partly hidden while the front one (7) passes over it.
    assert min(areas_back) < 0.8 * max(areas_back)
    assert min(areas_front) > 0.9 * max(areas_front)
    for obj_id in (3, 7):
        steps = [
            np.linalg.norm(_centroid(b == obj_id) - _centroid(a == obj_id))
            for a, b in zip(clip.masks[:4], clip.masks[1:5], strict=True)  # before the overlap
        ]
        assert all(0.5 <= s <= 3.5 for s in steps), steps


def test_iou_and_mean_j(clip: synthetic.Clip) -> None:
    gt = clip.masks
    assert synthetic.iou(gt[5], gt[5], 3) == 1.0
    assert synthetic.iou(gt[5], np.zeros_like(gt[5]), 3) == 0.0
    assert synthetic.iou(np.zeros_like(gt[5]), np.zeros_like(gt[5]), 3) == 1.0
    assert synthetic.mean_j(gt, gt, clip.ids) == 1.0
    copy = synthetic.mean_j([gt[0]] * len(gt), gt, clip.ids)
    assert 0.0 < copy < 0.5  # copying the first mask is a poor tracker here
    with pytest.raises(ValueError, match="preds"):
        synthetic.mean_j(gt[:3], gt, clip.ids)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(num_frames=0), "num_frames"),
        (dict(height=8), "height"),
        (dict(ids=()), "ids"),
        (dict(ids=(3, 3)), "unique"),
        (dict(ids=(0, 4)), "1..255"),
    ],
)
def test_make_clip_refuses_bad_arguments(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        synthetic.make_clip(**kwargs)


def test_write_davis_round_trip(tmp_path: Path) -> None:
    clip = synthetic.make_clip(num_frames=3, ids=(4, 200), seed=1, name="a")
    root = synthetic.write_davis([clip], tmp_path / "data")
    images = sorted((root / "JPEGImages" / "a").iterdir())
    annotations = sorted((root / "Annotations" / "a").iterdir())
    assert [p.name for p in images] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert [p.name for p in annotations] == ["00000.png", "00001.png", "00002.png"]
    for path, mask in zip(annotations, clip.masks, strict=True):
        with Image.open(path) as image:
            assert image.mode == "P"
            np.testing.assert_array_equal(np.asarray(image), mask)  # raw ids, no palette mapping
    with Image.open(images[0]) as image:
        assert np.abs(np.asarray(image).astype(int) - clip.frames[0]).mean() < 4  # JPEG q95


def test_overlays_are_valid_files(clip: synthetic.Clip, tmp_path: Path) -> None:
    gif, sheet = overlay.write_overlays(clip.frames, clip.masks, tmp_path, "my clip/1")
    assert gif.parent == sheet.parent == tmp_path
    assert "/" not in gif.name and gif.suffix == ".gif" and sheet.suffix == ".png"
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == len(clip.frames)
    with Image.open(sheet) as image:
        assert image.format == "PNG"
        assert image.width > 128 and image.height > 96


def test_overlay_colours_follow_ids(clip: synthetic.Clip) -> None:
    colours = {overlay.id_color(i) for i in range(1, 33)}
    assert len(colours) == 32
    assert overlay.id_color(7) == overlay.id_color(7)
    image = overlay.render(clip.frames[0], clip.masks[0])
    assert image.shape == clip.frames[0].shape and image.dtype == np.uint8
    inside = clip.masks[0] == 3
    assert not np.array_equal(image[inside], clip.frames[0][inside])
    assert np.array_equal(image[0, 0], clip.frames[0][0, 0])  # a corner, far from both objects


def test_contact_sheet_samples_long_clips() -> None:
    assert overlay.sheet_indices(5) == [0, 1, 2, 3, 4]
    picked = overlay.sheet_indices(1000, limit=24)
    assert picked[0] == 0 and picked[-1] == 999 and len(picked) == 24


def test_overlay_refuses_mismatched_input(clip: synthetic.Clip, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="masks"):
        overlay.write_overlays(clip.frames, clip.masks[:-1], tmp_path, "x")

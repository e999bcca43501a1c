"""SAM 2 in the app: streaming (one frame in, one mask out), bounded session state, weights
checks. Parity with transformers is in test_sam2_parity.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import sam2_fixtures
from serve_sam2 import model as sam2
from sly_vos.dev import synthetic

NUM_FRAMES = 8


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sam2_fixtures.short_memory_weights(tmp_path_factory)


@pytest.fixture(scope="module")
def short_tracker(weights: Path) -> sam2.Tracker:
    return sam2.Tracker(weights, "cpu")


def test_each_mask_is_yielded_before_the_next_frame_is_read(short_tracker: sam2.Tracker) -> None:
    clip = synthetic.make_clip(num_frames=NUM_FRAMES, height=40, width=56, ids=(1, 2), seed=2)
    read: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        for index, frame in enumerate(clip.frames):
            read.append(index)
            yield frame

    produced = 0
    for index, mask in enumerate(short_tracker.track(frames(), clip.masks[0])):
        assert read == list(range(index + 1)), f"mask {index} came after reading {read}"
        assert mask.shape == (40, 56) and mask.dtype == np.uint8 and int(mask.max()) <= 2
        produced += 1
    assert produced == NUM_FRAMES


def test_session_keeps_only_the_window_the_model_reads(
    short_tracker: sam2.Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each frame: no frame tensor left, no full-size mask, at most ``window`` tracked
    outputs per object (plus the annotated frame's); all of it freed when the request ends."""
    sessions = []
    original = short_tracker.new_session

    def recording(height: int, width: int):  # type: ignore[no-untyped-def]
        session = original(height, width)
        sessions.append(session)
        return session

    monkeypatch.setattr(short_tracker, "new_session", recording)
    clip = synthetic.make_clip(num_frames=NUM_FRAMES, height=40, width=56, ids=(1, 2), seed=4)
    for index, _ in enumerate(short_tracker.track(iter(clip.frames), clip.masks[0])):
        (session,) = sessions
        assert not session.processed_frames, f"frame tensors kept after frame {index}"
        for outputs in session.output_dict_per_obj.values():
            assert list(outputs["cond_frame_outputs"]) == [0]
            kept = sorted(outputs["non_cond_frame_outputs"])
            assert kept == list(range(max(1, index - sam2_fixtures.SHORT_WINDOW + 1), index + 1))
            for entry in [
                *outputs["cond_frame_outputs"].values(),
                *outputs["non_cond_frame_outputs"].values(),
            ]:
                assert "high_res_masks" not in entry
    assert not sessions[0].output_dict_per_obj  # reset when the request ended


def test_a_stopped_request_frees_its_session(
    short_tracker: sam2.Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = []
    original = short_tracker.new_session
    monkeypatch.setattr(
        short_tracker, "new_session", lambda h, w: sessions.append(original(h, w)) or sessions[-1]
    )
    clip = synthetic.make_clip(num_frames=NUM_FRAMES, height=40, width=56, ids=(1,), seed=5)
    masks = short_tracker.track(iter(clip.frames), clip.masks[0])
    next(masks), next(masks)
    assert sessions[0].output_dict_per_obj
    masks.close()
    assert not sessions[0].output_dict_per_obj


def test_weights_path_must_be_a_transformers_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(sam2.WeightsLayoutError, match="missing model.safetensors"):
        sam2.Tracker(tmp_path, "cpu")
    with pytest.raises(sam2.WeightsLayoutError, match="needs a checkpoint folder"):
        sam2.Tracker(None, "cpu")


def test_weights_of_another_architecture_are_refused(weights: Path, tmp_path: Path) -> None:
    """A config that does not fit the saved tensors (here, another memory size) is an error
    naming the keys, not a silently half-initialised network."""
    folder = tmp_path / "mismatch"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((weights / "model.safetensors").read_bytes())
    config = json.loads((weights / "config.json").read_text())
    config["num_maskmem"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(sam2.WeightsLayoutError, match="do not fit Sam2VideoModel"):
        sam2.Tracker(folder, "cpu")


def test_a_file_of_the_checkpoint_stands_for_its_folder(weights: Path) -> None:
    assert sam2.checkpoint_dir(weights / "model.safetensors") == weights


def test_test_weights_are_the_tiny_architecture_in_transformers_layout(tmp_path: Path) -> None:
    folder = sam2.make_test_weights(tmp_path)
    assert folder is not None and sorted(p.name for p in folder.iterdir()) == list(
        sorted(sam2.WEIGHTS_FILES)
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "sam2_video" and config["image_size"] == sam2.TEST_IMAGE_SIZE
    assert sam2.make_test_weights(tmp_path) == folder  # reused, not rewritten


def test_checkpoints_are_the_four_sam21_sizes_on_the_hub() -> None:
    from sly_vos import checkpoints

    declared = checkpoints.declared(sam2)
    assert [c.name for c in declared] == ["tiny", "small", "base-plus", "large"]
    assert [c.name for c in declared if c.default] == ["tiny"]
    for checkpoint in declared:
        assert checkpoint.hub_repo == f"facebook/sam2.1-hiera-{checkpoint.name}"
        assert checkpoint.files == sam2.WEIGHTS_FILES and checkpoint.revision

"""``tracking``: id compaction and restore, the checks of every input and of what a model
yields, the limits, and streaming (frames read only as the model asks, closed on stop).

Model-independent: a ``Spy`` tracker stands in for the model. Each app's own model is held
to the same contract by the ``contract`` suite of ``sly_vos.testing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sly_vos import limits
from sly_vos.dev import synthetic
from sly_vos.tracking import TrackerOutputError, run_tracker, track_stream
from sly_vos.validation import InputError


@pytest.fixture(scope="module")
def clip() -> synthetic.Clip:
    return synthetic.make_clip(num_frames=6, ids=(3, 7, 12), seed=3)


class Spy:
    """A tracker that records calls and returns ``reply(frames, label_mask)``."""

    def __init__(self, reply: Callable[[list, np.ndarray], object] | None = None) -> None:
        self.calls: list[np.ndarray] = []
        self.reply = reply or (lambda frames, mask: [mask.copy() for _ in frames])

    def track(self, frames: Iterator[np.ndarray], label_mask: np.ndarray) -> object:
        self.calls.append(label_mask.copy())
        return self.reply(list(frames), label_mask)


class Streamer:
    """A generator tracker that counts the frames it has read and whether it was closed."""

    def __init__(self) -> None:
        self.read = 0
        self.closed = False

    def track(self, frames: Iterator[np.ndarray], label_mask: np.ndarray) -> Iterator[np.ndarray]:
        try:
            for _ in frames:
                self.read += 1
                yield label_mask.copy()
        finally:
            self.closed = True


# --- id compaction and restore (any model) ---------------------------------------------


def test_model_sees_consecutive_ids(clip: synthetic.Clip) -> None:
    spy = Spy()
    out = run_tracker(spy, clip.frames, clip.masks[0])
    (seen,) = spy.calls
    assert seen.dtype == np.uint8
    assert set(np.unique(seen)) == {0, 1, 2, 3}
    for original, compact in ((3, 1), (7, 2), (12, 3)):
        np.testing.assert_array_equal(seen == compact, clip.masks[0] == original)
    for pred in out:
        np.testing.assert_array_equal(pred, clip.masks[0])


@hypothesis_settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(st.integers(1, 255), min_size=1, max_size=12, unique=True),
    seed=st.integers(0, 99),
)
def test_any_ids_round_trip(ids: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.choice(np.array([0, *ids], dtype=np.uint8), size=(9, 13))
    mask[0, : len(ids)] = ids  # every id present
    frames = [np.zeros((9, 13, 3), np.uint8)] * 3
    spy = Spy()
    out = run_tracker(spy, frames, mask)
    assert int(spy.calls[0].max()) == len(ids)
    for pred in out:
        assert pred.dtype == np.uint8
        np.testing.assert_array_equal(pred, mask)


def test_first_output_is_the_input_even_if_the_model_changes_it(clip: synthetic.Clip) -> None:
    spy = Spy(lambda frames, mask: [np.zeros_like(mask) for _ in frames])
    out = run_tracker(spy, clip.frames[:2], clip.masks[0])
    np.testing.assert_array_equal(out[0], clip.masks[0])
    assert not out[1].any()


# --- validation: every rule names its field and status, the model is never called ------


def _frames(count: int = 3, height: int = 8, width: int = 10) -> list[np.ndarray]:
    return [np.full((height, width, 3), 40 * i, np.uint8) for i in range(count)]


def _mask(height: int = 8, width: int = 10, dtype: type = np.uint8) -> np.ndarray:
    mask = np.zeros((height, width), dtype)
    mask[2:5, 3:7] = 4
    return mask


def _replace(frames: list[np.ndarray], index: int, frame: np.ndarray) -> list[np.ndarray]:
    frames = list(frames)
    frames[index] = frame
    return frames


GREY = np.zeros((8, 10), np.uint8)
RGBA = np.zeros((8, 10, 4), np.uint8)
FLOAT_RGB = np.zeros((8, 10, 3), np.float32)
WIDER = np.zeros((8, 11, 3), np.uint8)

# case: (make (frames, mask), field, status, words in the message)
BAD_INPUTS = {
    "no frames": (lambda: ([], _mask()), "frames", 422, "at least one"),
    "frames not a list": (
        lambda: (np.zeros((3, 8, 10, 3), np.uint8), _mask()),
        "frames",
        400,
        "list",
    ),
    "frame not an array": (
        lambda: (_replace(_frames(), 1, [[1, 2]]), _mask()),
        "frames[1]",
        400,
        "numpy",
    ),
    "grey frame": (lambda: (_replace(_frames(), 1, GREY), _mask()), "frames[1]", 422, "HxWx3"),
    "rgba frame": (lambda: (_replace(_frames(), 2, RGBA), _mask()), "frames[2]", 422, "HxWx3"),
    "float frame": (
        lambda: (_replace(_frames(), 0, FLOAT_RGB), _mask()),
        "frames[0]",
        422,
        "uint8",
    ),
    "empty frame": (
        lambda: ([np.zeros((0, 10, 3), np.uint8)], np.zeros((0, 10), np.uint8)),
        "frames[0]",
        422,
        "empty",
    ),
    "frame size differs": (
        lambda: (_replace(_frames(), 2, WIDER), _mask()),
        "frames[2]",
        422,
        "differs",
    ),
    "mask not an array": (lambda: (_frames(), _mask().tolist()), "input_mask", 400, "numpy"),
    "mask 3-D": (lambda: (_frames(), np.stack([_mask()] * 3, axis=-1)), "input_mask", 422, "2-D"),
    "mask size differs": (lambda: (_frames(), _mask(8, 9)), "input_mask", 422, "differs"),
    "bool mask": (lambda: (_frames(), _mask() > 0), "input_mask", 422, "integer"),
    "float mask": (lambda: (_frames(), _mask(dtype=np.float32)), "input_mask", 422, "integer"),
    "negative id": (lambda: (_frames(), _mask(dtype=np.int16) - 1), "input_mask", 422, "0..255"),
    "id over 255": (lambda: (_frames(), _mask(dtype=np.uint16) * 100), "input_mask", 422, "0..255"),
    "no object": (
        lambda: (_frames(), np.zeros((8, 10), np.uint8)),
        "input_mask",
        422,
        "no object to track",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused(case: str) -> None:
    make, field, status, words = BAD_INPUTS[case]
    frames, mask = make()
    spy = Spy()
    with pytest.raises(InputError) as info:
        run_tracker(spy, frames, mask)
    assert info.value.field == field
    assert info.value.status == status
    assert words in str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    assert spy.calls == []


@pytest.mark.parametrize(
    ("limit", "value", "field", "count", "size"),
    [
        ("MAX_FRAMES", 2, "frames", 3, (8, 10)),
        ("MAX_FRAME_PIXELS", 79, "frames[0]", 1, (8, 10)),
        ("MAX_FRAME_SIDE", 9, "frames[0]", 1, (8, 10)),
        ("MAX_TOTAL_PIXELS", 200, "frames", 3, (8, 10)),
    ],
)
def test_limits_answer_413(
    monkeypatch: pytest.MonkeyPatch, limit: str, value: int, field: str, count: int, size: tuple
) -> None:
    monkeypatch.setattr(limits, limit, value)
    spy = Spy()
    with pytest.raises(InputError) as info:
        run_tracker(spy, _frames(count, *size), _mask(*size))
    assert (info.value.field, info.value.status) == (field, 413)
    assert limit in str(info.value)
    assert spy.calls == []


def test_object_count_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_OBJECTS", 2)
    mask = _mask()
    mask[6, 0], mask[7, 0] = 9, 10
    with pytest.raises(InputError) as info:
        run_tracker(Spy(), _frames(), mask)
    assert (info.value.field, info.value.status) == ("input_mask", 413)
    assert "MAX_OBJECTS" in str(info.value)


def test_limits_at_the_edge_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_FRAMES", 3)
    monkeypatch.setattr(limits, "MAX_FRAME_PIXELS", 80)
    monkeypatch.setattr(limits, "MAX_FRAME_SIDE", 10)
    monkeypatch.setattr(limits, "MAX_TOTAL_PIXELS", 240)
    assert len(run_tracker(Spy(), _frames(3), _mask())) == 3


# --- what a model returns is checked ---------------------------------------------------

BAD_OUTPUTS = {
    "too few masks": lambda frames, mask: [mask],
    "not a list": lambda frames, mask: None,
    "an array, not a list": lambda frames, mask: np.stack([mask for _ in frames]),
    "too many masks": lambda frames, mask: [mask] * (len(frames) + 1),
    "wrong shape": lambda frames, mask: [mask[:, :-1] for _ in frames],
    "float masks": lambda frames, mask: [mask.astype(np.float32) for _ in frames],
    "unknown id": lambda frames, mask: [mask + (mask > 0) for _ in frames],
    "negative id": lambda frames, mask: [mask.astype(np.int16) - 1 for _ in frames],
}


@pytest.mark.parametrize("case", list(BAD_OUTPUTS))
def test_bad_model_output_is_an_error(case: str) -> None:
    with pytest.raises(TrackerOutputError, match="track\\(\\)"):
        run_tracker(Spy(BAD_OUTPUTS[case]), _frames(), _mask())
    assert not issubclass(TrackerOutputError, RuntimeError)


# --- streaming -------------------------------------------------------------------------


def test_frames_are_read_only_as_the_model_asks(clip: synthetic.Clip) -> None:
    model = Streamer()
    pulled: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        for index, frame in enumerate(clip.frames):
            pulled.append(index)
            yield frame

    stream = track_stream(model, frames(), clip.masks[0], len(clip.frames))
    next(stream), next(stream)
    assert pulled == [0, 1] and model.read == 2
    stream.close()
    assert model.closed, "closing the stream (a stop) must close the model's generator"


def test_stream_checks_each_frame_as_it_arrives(clip: synthetic.Clip) -> None:
    frames = list(clip.frames[:3]) + [np.zeros((5, 5, 3), np.uint8)]
    stream = track_stream(Streamer(), iter(frames), clip.masks[0], 4)
    assert len([next(stream) for _ in range(3)]) == 3
    with pytest.raises(InputError) as info:
        next(stream)
    assert info.value.field == "frames[3]"


@pytest.mark.parametrize(("given_frames", "announced"), [(3, 4), (5, 4)])
def test_stream_refuses_a_frame_count_other_than_announced(
    clip: synthetic.Clip, given_frames: int, announced: int
) -> None:
    with pytest.raises(InputError, match="announced"):
        list(track_stream(Streamer(), iter(clip.frames[:given_frames]), clip.masks[0], announced))


def test_a_model_may_return_a_list(clip: synthetic.Clip) -> None:
    out = list(track_stream(Spy(), iter(clip.frames), clip.masks[0], len(clip.frames)))
    assert len(out) == len(clip.frames)

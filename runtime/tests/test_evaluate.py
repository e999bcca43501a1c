"""``python -m sly_vos.dev.evaluate`` on the apps' DAVIS-style sample.

Real files, the real vos-benchmark in a child process: J, F and J&F are printed and saved,
overlays are valid GIF/PNG files, ground truth scored as a prediction gives 100, and broken
predictions give a clear error instead of the benchmark's hang. The tracker is a fake app's
(it copies the first mask), so the scores are valid but low.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sly_vos.dev import evaluate

VIDEOS = ("crossing", "sparse-ids", "three-objects")


def _frame_count(sample: Path, video: str) -> int:
    return len(list((sample / "JPEGImages" / video).glob("*.jpg")))


def test_sample_is_davis_layout(sample: Path) -> None:
    for video in VIDEOS:
        images = sorted((sample / "JPEGImages" / video).glob("*.jpg"))
        annotations = sorted((sample / "Annotations" / video).glob("*.png"))
        assert len(images) >= 3
        assert [p.stem for p in images] == [p.stem for p in annotations]
        with Image.open(annotations[0]) as first:
            assert first.mode == "P"
            assert np.asarray(first).max() > 0


def test_evaluate_sample(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture, fake_app_src: Path
) -> None:
    out = tmp_path / "out"
    code = evaluate.main([str(sample), "--app", "fakeapp", "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "J&F" in printed and "overall" in printed
    for video in VIDEOS:
        assert video in printed

    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    for key in ("J", "F", "J&F"):
        assert 0 <= overall[key] <= 100
    assert overall["J&F"] == pytest.approx((overall["J"] + overall["F"]) / 2)
    assert overall["objects"] == 7
    assert set(results["videos"]) == set(VIDEOS)
    assert (out / "results.csv").read_text().startswith("video,object,J&F,J,F")

    for video in VIDEOS:
        count = _frame_count(sample, video)
        predictions = sorted((out / "predictions" / video).glob("*.png"))
        assert len(predictions) == count
        gif, sheet = (Path(p) for p in results["videos"][video]["overlays"])
        assert str(gif) in printed and str(sheet) in printed
        with Image.open(gif) as image:
            assert image.format == "GIF"
            assert image.n_frames == count
        with Image.open(sheet) as image:
            assert image.format == "PNG"
            image.verify()


def test_ground_truth_as_prediction_scores_100(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    annotations = sample / "Annotations"
    before = sorted(p.relative_to(annotations) for p in annotations.rglob("*"))
    code = evaluate.main(
        [str(sample), "--predictions", str(annotations), "--out", str(tmp_path), "--no-overlays"]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("J", "F", "J&F"):
        assert results["overall"][key] == pytest.approx(100.0)
        for video in VIDEOS:
            assert results["videos"][video][key] == pytest.approx(100.0)
    # vos-benchmark writes results.csv into the folder it scores: it got a scratch copy.
    assert sorted(p.relative_to(annotations) for p in annotations.rglob("*")) == before


def test_scores_follow_davis_conventions(sample: Path, tmp_path: Path) -> None:
    """Wrong first and last frames do not count; a wrong middle frame does."""
    video = "crossing"
    pred = tmp_path / "pred"
    shutil.copytree(sample / "Annotations", pred)
    frames = sorted((pred / video).glob("*.png"))
    for path in (frames[0], frames[-1]):
        with Image.open(path) as image:
            blank = Image.new("P", image.size, 0)
            blank.putpalette(image.getpalette())
        blank.save(path)
    videos = evaluate.find_videos(sample, [video])
    summary = evaluate.summarize(evaluate.score(videos, pred, 300), videos)
    assert summary["overall"]["J"] == pytest.approx(100.0)

    with Image.open(frames[1]) as image:
        blank = Image.new("P", image.size, 0)
        blank.putpalette(image.getpalette())
    blank.save(frames[1])
    summary = evaluate.summarize(evaluate.score(videos, pred, 300), videos)
    middle = len(frames) - 2
    assert summary["overall"]["J"] == pytest.approx(100.0 * (middle - 1) / middle)


def test_missing_predicted_frame_is_a_clear_error(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pred = tmp_path / "pred"
    shutil.copytree(sample / "Annotations", pred)
    (pred / "sparse-ids" / "00004.png").unlink()
    code = evaluate.main([str(sample), "--predictions", str(pred), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "missing prediction" in err and "00004.png" in err


def test_benchmark_stopping_is_an_error_not_a_hang(sample: Path, tmp_path: Path) -> None:
    """Past the pre-check, vos-benchmark's own exit() on a missing frame still fails fast."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    shutil.copytree(sample / "Annotations" / "crossing", gt / "crossing")
    shutil.copytree(sample / "Annotations" / "crossing", pred / "crossing")
    (pred / "crossing" / "00003.png").unlink()
    with pytest.raises(evaluate.EvaluationError, match="vos-benchmark"):
        evaluate.run_benchmark(gt, pred, timeout_s=300)


def test_benchmark_timeout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(evaluate, "BENCHMARK_SCRIPT", "import time; time.sleep(120)")
    with pytest.raises(evaluate.EvaluationError, match="timed out"):
        evaluate.run_benchmark(tmp_path, tmp_path, timeout_s=1)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--videos", "nope"], "not in"),
        (["--size", "4"], "--size"),
        (["--timeout", "0"], "--timeout"),
        (["--predictions", "/nonexistent/preds"], "--predictions"),
    ],
)
def test_bad_arguments(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], words: str
) -> None:
    assert evaluate.main([str(sample), "--app", "fakeapp", "--out", str(tmp_path), *args]) == 1
    assert words in capsys.readouterr().err


def test_tracking_needs_the_app(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert evaluate.main([str(sample), "--out", str(tmp_path)]) == 1
    assert "--app" in capsys.readouterr().err
    assert evaluate.main([str(sample), "--app", "no_such_app", "--out", str(tmp_path)]) == 1
    assert "no_such_app" in capsys.readouterr().err


def test_not_a_davis_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert evaluate.main([str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "JPEGImages" in capsys.readouterr().err


def test_rgb_annotations_are_refused(sample: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample / "JPEGImages" / "crossing", data / "JPEGImages" / "crossing")
    shutil.copytree(sample / "Annotations" / "crossing", data / "Annotations" / "crossing")
    first = data / "Annotations" / "crossing" / "00000.png"
    with Image.open(first) as image:
        image.convert("RGB").save(first)
    (video,) = evaluate.find_videos(data)
    with pytest.raises(evaluate.EvaluationError, match="palette"):
        evaluate.read_label(video.annotations[0])

"""Score the app's tracker on a DAVIS-style folder: J, F and J&F per video and overall.

    python -m sly_vos.dev.evaluate DATA_DIR --app PACKAGE [--out OUT] [--videos a,b]
        [--weights PATH] [--device cpu] [--size N] [--timeout S] [--predictions DIR]

``DATA_DIR`` holds ``JPEGImages/<video>/*.jpg|png`` and ``Annotations/<video>/*.png`` (palette
or grey PNGs whose pixel values are the object ids). The first annotation of a video is the
prompt; the app's tracker (``PACKAGE.model``) runs in this process (no server), through
``tracking.run_tracker`` like the app. ``--predictions DIR`` skips tracking and scores
``DIR/<video>/*.png`` instead.

Scores follow the DAVIS semi-supervised convention, computed by ``vos-benchmark``: the first
(prompt) and last annotated frames are excluded, J and F are averaged per object over frames,
a video's score is the mean of its objects and the overall score the mean over all objects.
Values are percentages (ground truth scored against itself gives 100).

``vos-benchmark`` hangs when a predicted frame is missing (a pool worker calls ``exit``) and
writes ``results.csv`` into the prediction folder; here every frame is checked first, the
benchmark runs in a child process with a timeout on a scratch copy of both folders, and its
``exit`` is turned into an error.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..appspec import AppSpec, AppSpecError
from ..tracking import run_tracker
from ..validation import InputError
from .overlay import write_overlays
from .synthetic import save_label_png

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_TIMEOUT_S = 900.0
RESULT_MARK = "@@VOS_RESULTS@@"

# Runs in a child process: ``python -c BENCHMARK_SCRIPT GT_DIR PRED_DIR``.
BENCHMARK_SCRIPT = f"""
import json, sys
import vos_benchmark.benchmark as vb

def _exit(code=1):
    raise RuntimeError(f"vos-benchmark stopped (exit {{code}}); see the message above")

vb.exit = _exit  # its workers call exit() on a missing frame, which hangs the pool
_, _, _, metrics = vb.benchmark([sys.argv[1]], [sys.argv[2]], strict=True, num_processes=1,
                                verbose=False, skip_first_and_last=True)
out = {{video: {{"J": {{str(int(k)): float(v) for k, v in iou.items()}},
                 "F": {{str(int(k)): float(v) for k, v in bf.items()}}}}
       for video, (iou, bf) in metrics[0].items()}}
print("{RESULT_MARK}" + json.dumps(out))
"""


class EvaluationError(Exception):
    """The data, the predictions or the scoring run are unusable; the message says why."""


@dataclass
class Video:
    """One video of the dataset: frames and ground-truth annotations, matched by file stem."""

    name: str
    images: list[Path]
    annotations: list[Path]

    @property
    def stems(self) -> list[str]:
        return [path.stem for path in self.images]


def find_videos(data_dir: Path, names: Sequence[str] | None = None) -> list[Video]:
    """List the videos of ``data_dir`` (all, or ``names``) and check their files match."""
    image_root, gt_root = data_dir / "JPEGImages", data_dir / "Annotations"
    for root in (image_root, gt_root):
        if not root.is_dir():
            raise EvaluationError(f"{data_dir}: no {root.name}/ folder (DAVIS layout expected)")
    available = sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    if names:
        unknown = [name for name in names if name not in available]
        if unknown:
            raise EvaluationError(f"--videos: {unknown} not in {gt_root} (has {available})")
        available = [name for name in available if name in set(names)]
    if not available:
        raise EvaluationError(f"{gt_root}: no video folders")
    videos = []
    for name in available:
        images = (
            sorted(p for p in (image_root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if (image_root / name).is_dir()
            else []
        )
        annotations = sorted((gt_root / name).glob("*.png"))
        if not images:
            raise EvaluationError(f"{image_root / name}: no .jpg/.png frames")
        if not annotations:
            raise EvaluationError(f"{gt_root / name}: no .png annotations")
        stems = {p.stem for p in images}
        if len(stems) != len(images):
            raise EvaluationError(f"{image_root / name}: two frames share a name")
        orphans = [p.name for p in annotations if p.stem not in stems]
        if orphans:
            raise EvaluationError(f"{gt_root / name}: annotations without a frame: {orphans[:5]}")
        if annotations[0].stem != images[0].stem:
            raise EvaluationError(
                f"{gt_root / name}: the first annotation {annotations[0].name} must belong to "
                f"the first frame {images[0].name} (it is the prompt)"
            )
        videos.append(Video(name, images, annotations))
    return videos


def read_frame(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_label(path: Path) -> np.ndarray:
    """Raw ids of a palette or grey PNG (no palette-to-colour conversion)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise EvaluationError(
                f"{path}: mode {image.mode}; annotations must be palette (P) or grey (L) PNGs "
                "whose pixel values are object ids"
            )
        return np.asarray(image)


def _shrink(size: tuple[int, int], max_short: int | None) -> tuple[int, int] | None:
    """(width, height) to track at, or None to keep the size."""
    height, width = size
    if max_short is None or min(height, width) <= max_short:
        return None
    factor = max_short / min(height, width)
    return max(1, round(width * factor)), max(1, round(height * factor))


def track_video(tracker, video: Video, max_short: int | None) -> list[np.ndarray]:
    """Predicted label maps (caller's ids, full size) for every frame of ``video``."""
    frames = [read_frame(p) for p in tqdm(video.images, desc=video.name, leave=False, disable=None)]
    prompt = read_label(video.annotations[0])
    full = frames[0].shape[:2]
    work = _shrink(full, max_short)
    if work is not None:
        frames = [cv2.resize(f, work, interpolation=cv2.INTER_AREA) for f in frames]
        prompt = cv2.resize(prompt, work, interpolation=cv2.INTER_NEAREST)
    try:
        masks = run_tracker(tracker, frames, prompt)
    except InputError as exc:
        raise EvaluationError(f"{video.name}: the tracker refused the input: {exc}") from exc
    except NotImplementedError as exc:
        raise EvaluationError(f"{video.name}: the model does not track yet: {exc}") from exc
    if work is not None:
        size = (full[1], full[0])
        masks = [cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in masks]
    return masks


def check_predictions(videos: Sequence[Video], pred_dir: Path) -> None:
    """Every annotated frame needs a predicted PNG of the same size (else vos-benchmark hangs)."""
    problems: list[str] = []
    for video in videos:
        for gt_path in video.annotations:
            pred_path = pred_dir / video.name / gt_path.name
            if not pred_path.is_file():
                problems.append(f"missing prediction {pred_path}")
                continue
            with Image.open(gt_path) as gt, Image.open(pred_path) as pred:
                if pred.size != gt.size:
                    problems.append(f"{pred_path}: size {pred.size} differs from {gt.size}")
                elif pred.mode not in ("P", "L"):
                    problems.append(f"{pred_path}: mode {pred.mode}, expected a palette/grey PNG")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise EvaluationError("predictions incomplete: " + "; ".join(problems[:10]) + more)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)


def _stop(process: subprocess.Popen) -> None:
    """Kill the benchmark and its pool workers (they share its process group)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except ProcessLookupError:
        pass
    process.communicate()


def run_benchmark(gt_dir: Path, pred_dir: Path, timeout_s: float) -> dict[str, dict]:
    """Run vos-benchmark on two folders of ``<video>/<frame>.png`` in a child process.

    Returns ``{video: {"J": {id: pct}, "F": {id: pct}}}``; raises ``EvaluationError`` when it
    fails or runs past ``timeout_s``.
    """
    command = [sys.executable, "-c", BENCHMARK_SCRIPT, str(gt_dir), str(pred_dir)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop(process)
        raise EvaluationError(f"vos-benchmark timed out after {timeout_s:g} s") from None
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    tail = (stdout + stderr).strip().splitlines()[-8:]
    raise EvaluationError(f"vos-benchmark failed (exit {process.returncode}): " + " | ".join(tail))


def score(videos: Sequence[Video], pred_dir: Path, timeout_s: float) -> dict[str, dict]:
    """Check the predictions, then score them against the annotations on scratch copies."""
    check_predictions(videos, pred_dir)
    with tempfile.TemporaryDirectory(prefix="vos-eval-") as scratch:
        gt_root, mask_root = Path(scratch) / "gt", Path(scratch) / "pred"
        for video in videos:
            (gt_root / video.name).mkdir(parents=True)
            (mask_root / video.name).mkdir(parents=True)
            for gt_path in video.annotations:
                _link_or_copy(gt_path, gt_root / video.name / gt_path.name)
                name = gt_path.name
                _link_or_copy(pred_dir / video.name / name, mask_root / video.name / name)
        return run_benchmark(gt_root, mask_root, timeout_s)


def summarize(raw: dict[str, dict], videos: Sequence[Video]) -> dict:
    """Per-video and overall J, F, J&F (overall = mean over all objects, as DAVIS)."""
    per_video: dict[str, dict] = {}
    all_j: list[float] = []
    all_f: list[float] = []
    for video in videos:
        entry = raw.get(video.name, {"J": {}, "F": {}})
        ids = sorted(entry["J"], key=int)
        if not ids:
            per_video[video.name] = {
                "J": None,
                "F": None,
                "J&F": None,
                "objects": {},
                "note": "not scored: fewer than 3 annotated frames",
            }
            continue
        js = [entry["J"][i] for i in ids]
        fs = [entry["F"][i] for i in ids]
        all_j.extend(js)
        all_f.extend(fs)
        j, f = float(np.mean(js)), float(np.mean(fs))
        per_video[video.name] = {
            "J": j,
            "F": f,
            "J&F": (j + f) / 2,
            "objects": {i: {"J": entry["J"][i], "F": entry["F"][i]} for i in ids},
        }
    if not all_j:
        raise EvaluationError(
            "nothing to score: the first and last annotated frames are excluded, so a video "
            "needs at least 3 annotated frames"
        )
    j, f = float(np.mean(all_j)), float(np.mean(all_f))
    return {
        "overall": {"J": j, "F": f, "J&F": (j + f) / 2, "objects": len(all_j)},
        "videos": per_video,
        "convention": "DAVIS semi-supervised (vos-benchmark): first and last annotated frames "
        "excluded; per-object mean over frames; overall = mean over all objects; percent",
    }


def format_table(summary: dict) -> str:
    rows = [("video", "objects", "J&F", "J", "F")]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    for name, entry in summary["videos"].items():
        count = str(len(entry["objects"]))
        rows.append((name, count, fmt(entry["J&F"]), fmt(entry["J"]), fmt(entry["F"])))
    overall = summary["overall"]
    count = str(overall["objects"])
    rows.append(("overall", count, fmt(overall["J&F"]), fmt(overall["J"]), fmt(overall["F"])))
    width = max(len(r[0]) for r in rows)
    lines = [f"{r[0]:<{width}}  {r[1]:>7}  {r[2]:>6}  {r[3]:>6}  {r[4]:>6}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_results(summary: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "results.json", out / "results.csv"
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "object", "J&F", "J", "F"])
        for name, entry in summary["videos"].items():
            for obj, values in entry["objects"].items():
                j, f = values["J"], values["F"]
                writer.writerow([name, obj, (j + f) / 2, j, f])
        overall = summary["overall"]
        writer.writerow(["overall", "", overall["J&F"], overall["J"], overall["F"]])
    return json_path, csv_path


def load_tracker(spec: AppSpec, weights: str | None, device: str):
    """The app's model, loaded like ``TrackingApp.load_on_device`` (weights only when needed)."""
    from ..device import choose_device
    from ..weights import WeightsError, resolve_weights

    chosen = choose_device(device)
    path: Path | None = None
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EvaluationError(f"--weights: {path} is not a file")
    elif spec.weights_required:
        try:
            path = resolve_weights(spec.settings)
        except WeightsError as exc:
            raise EvaluationError(f"weights: {exc} (or pass --weights PATH)") from exc
    return spec.make_tracker(path, chosen)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sly_vos.dev.evaluate",
        description="Score an app's tracker on a DAVIS-style folder (J, F, J&F; vos-benchmark).",
    )
    parser.add_argument("data_dir", type=Path, help="folder with JPEGImages/ and Annotations/")
    parser.add_argument(
        "--app", default=None, help="the app's package (src/<package>); needed unless --predictions"
    )
    parser.add_argument("--out", type=Path, default=Path("eval-out"), help="output folder")
    parser.add_argument("--videos", default=None, help="comma-separated video names (default: all)")
    parser.add_argument("--weights", default=None, help="weights file (default: as the app)")
    parser.add_argument("--device", default="cuda", help="cuda (falls back to cpu) or cpu")
    parser.add_argument("--size", type=int, default=None, help="track at short side <= N px")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="seconds allowed for scoring (default %(default)s)",
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="score DIR/<video>/*.png instead of running the tracker",
    )
    parser.add_argument("--no-overlays", action="store_true", help="skip the GIF/PNG overlays")
    return parser


def evaluate(args: argparse.Namespace) -> dict:
    """Track (unless ``--predictions``), score, write results and overlays; return the summary."""
    if args.size is not None and args.size < 16:
        raise EvaluationError(f"--size: must be >= 16, got {args.size}")
    if args.timeout <= 0:
        raise EvaluationError(f"--timeout: must be > 0, got {args.timeout}")
    names = [n.strip() for n in args.videos.split(",") if n.strip()] if args.videos else None
    videos = find_videos(args.data_dir, names)
    out: Path = args.out
    seconds: dict[str, float] = {}
    if args.predictions is None:
        pred_dir = out / "predictions"
        if not args.app:
            raise EvaluationError("--app: the app's package name is required to track")
        try:
            spec = AppSpec.from_package(args.app)
        except AppSpecError as exc:
            raise EvaluationError(f"--app: {exc}") from exc
        tracker = load_tracker(spec, args.weights, args.device)
        for video in tqdm(videos, desc="tracking", unit="video", disable=None):
            start = time.perf_counter()
            masks = track_video(tracker, video, args.size)
            seconds[video.name] = time.perf_counter() - start
            (pred_dir / video.name).mkdir(parents=True, exist_ok=True)
            for stem, mask in zip(video.stems, masks, strict=True):
                save_label_png(mask, pred_dir / video.name / f"{stem}.png")
    else:
        pred_dir = args.predictions
        if not pred_dir.is_dir():
            raise EvaluationError(f"--predictions: {pred_dir} is not a folder")
    summary = summarize(score(videos, pred_dir, args.timeout), videos)
    summary["predictions"] = str(pred_dir)
    for name, value in seconds.items():
        summary["videos"][name]["track_seconds"] = round(value, 3)
    if not args.no_overlays:
        for video in tqdm(videos, desc="overlays", unit="video", disable=None):
            frames = [read_frame(p) for p in video.images]
            preds = [
                _read_prediction(pred_dir / video.name / f"{s}.png", f.shape[:2])
                for s, f in zip(video.stems, frames, strict=True)
            ]
            gif, sheet = write_overlays(frames, preds, out / "overlays", video.name)
            summary["videos"][video.name]["overlays"] = [str(gif), str(sheet)]
    return summary


def _read_prediction(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A predicted mask for the overlay; empty when that frame was not predicted."""
    if not path.is_file():
        return np.zeros(size, dtype=np.uint8)
    return read_label(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        summary = evaluate(args)
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(summary))
    json_path, csv_path = write_results(summary, args.out)
    print(f"results: {json_path} {csv_path}")
    for name, entry in summary["videos"].items():
        if "overlays" in entry:
            print(f"overlays {name}: {' '.join(entry['overlays'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

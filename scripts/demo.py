"""The README's main job: bake an app, serve it, track the bundled clips end to end.

1. bakes the template with its default answers (optical-flow starter) into ``OUT/``;
2. serves the baked app with uvicorn on 127.0.0.1 (placeholder platform credentials: the
   ``/track-api-files`` endpoint needs no Supervisely instance, none is contacted);
3. sends every clip of the app's bundled DAVIS-style sample (``sample/``; synthetic clips
   with ``--synthetic`` or when the app has none) to ``POST /track-api-files``;
4. scores each track against the ground truth (J, beside copying the first mask to every
   frame) and writes an overlay GIF and a contact sheet per clip, printing their paths.

Usage: ``.venv/bin/python scripts/demo.py [--out out/demo] [--synthetic]`` (``make demo``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repo_tools import REPO_ROOT, repo_relative
from repo_tools.baking import App, bake
from repo_tools.serving import serve_env, served


@dataclass
class DemoClip:
    """Frames to track, the first frame's label mask and the ground truth there is
    (``truth[i]`` is None for a frame without an annotation)."""

    name: str
    frames: list[np.ndarray]
    truth: list[np.ndarray | None]

    @property
    def ids(self) -> list[int]:
        first = self.truth[0]
        assert first is not None
        return [int(i) for i in np.unique(first) if i != 0]


def sample_clips(sample: Path) -> list[DemoClip]:
    """The clips of a DAVIS-style folder; annotations matched to frames by file stem."""
    from sly_vos.dev import evaluate

    clips = []
    for video in evaluate.find_videos(sample):
        by_stem = {path.stem: path for path in video.annotations}
        frames = [evaluate.read_frame(path) for path in video.images]
        truth = [
            evaluate.read_label(by_stem[path.stem]) if path.stem in by_stem else None
            for path in video.images
        ]
        clips.append(DemoClip(video.name, frames, truth))
    return clips


def synthetic_clips() -> list[DemoClip]:
    """The runtime's synthetic versions of the bundled sample (exact ground truth)."""
    from sly_vos.dev import synthetic

    clips = []
    for name, kwargs in synthetic.SAMPLE_CLIPS:
        clip = synthetic.make_clip(name=name, **kwargs)
        clips.append(DemoClip(name, clip.frames, list(clip.masks)))
    return clips


def scores(tracked: list[np.ndarray], clip: DemoClip) -> dict[str, float]:
    """J over the annotated frames after the first: mean over objects, and per object;
    ``copy`` is J of repeating the first mask (what not tracking at all scores)."""
    from sly_vos.dev import synthetic

    scored = [i for i, gt in enumerate(clip.truth) if i > 0 and gt is not None]
    if not scored:
        return {}
    gts = [clip.truth[0], *(clip.truth[i] for i in scored)]
    preds = [tracked[0], *(tracked[i] for i in scored)]
    first = [clip.truth[0]] * len(gts)
    result = {
        "J": synthetic.mean_j(preds, gts, clip.ids),
        "copy": synthetic.mean_j(first, gts, clip.ids),
    }
    for obj_id in clip.ids:
        result[f"J_{obj_id}"] = synthetic.mean_j(preds, gts, [obj_id])
    return result


def track_clip(base_url: str, clip: DemoClip, out: Path) -> dict:
    """One ``/track-api-files`` request for the whole clip; overlays and scores."""
    from sly_vos.dev import client, overlay

    first = clip.truth[0]
    assert first is not None
    began = time.perf_counter()
    tracked = client.track_over_http(base_url, clip.frames, first, clip.ids)
    seconds = time.perf_counter() - began
    gif, sheet = overlay.write_overlays(clip.frames, tracked, out / "overlays", clip.name)
    found = scores(tracked, clip)
    height, width = first.shape
    per_object = ", ".join(f"{i}: {found[f'J_{i}']:.3f}" for i in clip.ids) if found else ""
    score_text = (
        f"J {found['J']:.3f} (objects {per_object}; copying the first mask {found['copy']:.3f})"
        if found
        else "no ground truth after frame 0"
    )
    print(
        f"{clip.name}: {len(clip.frames)} frames of {width}x{height}, ids {clip.ids}: "
        f"{score_text} in {seconds:.2f} s\n  {repo_relative(gif)}\n  {repo_relative(sheet)}",
        flush=True,
    )
    return {
        "frames": len(clip.frames),
        "size": [height, width],
        "ids": clip.ids,
        **{key: round(value, 4) for key, value in found.items()},
        "request_s": round(seconds, 3),
        "gif": str(gif),
        "contact_sheet": str(sheet),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "out" / "demo",
        help="where the app, the overlays and demo.json go",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="track synthetic clips instead of the app's bundled sample",
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()

    app: App = bake(out, replace=True)
    print(f"baked {repo_relative(app.root)} (package {app.package})", flush=True)
    app.on_path()  # the app's package and its copy of the runtime
    use_sample = not args.synthetic and (app.sample / "JPEGImages").is_dir()
    clips = sample_clips(app.sample) if use_sample else synthetic_clips()
    source = repo_relative(app.sample) if use_sample else "synthetic clips"

    env = serve_env(app, out / "server")
    log = out / "server.log"
    results = {}
    with served(app, env, log) as server:
        print(
            f"serving {server.base_url} (started in {server.startup_s:.1f} s, log "
            f"{repo_relative(log)}); tracking {len(clips)} clips of {source}",
            flush=True,
        )
        for clip in clips:
            results[clip.name] = track_clip(server.base_url, clip, out)
    summary = out / "demo.json"
    summary.write_text(
        json.dumps({"source": source, "clips": results}, indent=2) + "\n", encoding="utf-8"
    )
    print(f"overlays: {repo_relative(out / 'overlays')}\nsummary: {repo_relative(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The README's main job: bake an app, serve it, track the bundled clips end to end.

1. bakes the template with its defaults through the real cookiecutter CLI;
2. starts the baked app with uvicorn on 127.0.0.1 (no Supervisely instance is contacted);
3. sends every clip of the app's bundled DAVIS-style sample to ``POST /track-api-files``;
4. scores each track against the sample's ground truth (J) and writes an overlay GIF and a
   contact sheet per clip, printing their paths.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def bake(out: Path) -> Path:
    """Bake the defaults into ``out`` with the cookiecutter CLI; returns the app folder."""
    out.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).parent / "cookiecutter"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        subprocess.run(
            [str(cli), str(REPO_ROOT), "--no-input", "-o", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (baked,) = Path(tmp).iterdir()
        target = out / baked.name
        if target.exists():
            shutil.rmtree(target)
        baked.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "demo")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()

    app = bake(out)
    print(f"baked {app}")
    package = app.name.replace("-", "_")
    sys.path[:0] = [str(app / "src"), str(app / "tests")]
    client = __import__(f"{package}.client", fromlist=["client"])
    evaluate = __import__(f"{package}.evaluate", fromlist=["evaluate"])
    overlay = __import__(f"{package}.overlay", fromlist=["overlay"])
    synthetic = __import__(f"{package}.synthetic", fromlist=["synthetic"])
    settings = __import__(f"{package}.settings", fromlist=["settings"])
    from _server import Server  # the app's own loopback server harness

    env = dict(os.environ)
    env.update(
        SLY_APP_DATA_DIR=str(out / "app_data"),
        SERVER_ADDRESS="http://127.0.0.1:9",
        API_TOKEN="placeholder",
    )
    env[settings.MODEL_DIR_ENV] = str(out / "model_dir")
    (out / "app_data").mkdir(parents=True, exist_ok=True)
    server = Server(app, env, out / "server.log").start()
    log = out / "server.log"
    print(f"serving {server.base_url} (log: {log}, started in {server.startup_s:.1f} s)")
    results = {}
    try:
        for video in evaluate.find_videos(app / "sample"):
            frames = [evaluate.read_frame(p) for p in video.images]
            truth = [evaluate.read_label(p) for p in video.annotations]
            first = truth[0]
            ids = [int(i) for i in np.unique(first) if i != 0]
            started = time.perf_counter()
            tracked = client.track_over_http(server.base_url, frames, first, ids)
            seconds = time.perf_counter() - started
            j = synthetic.mean_j(tracked, truth, ids)
            baseline = synthetic.mean_j([first] * len(truth), truth, ids)
            gif, sheet = overlay.write_overlays(frames, tracked, out / "overlays", video.name)
            results[video.name] = {
                "frames": len(frames),
                "ids": ids,
                "J": round(j, 4),
                "J_copy_first_mask": round(baseline, 4),
                "request_s": round(seconds, 3),
                "gif": str(gif),
                "contact_sheet": str(sheet),
            }
            print(
                f"{video.name}: {len(frames)} frames, ids {ids}: J {j:.3f} "
                f"(copy-first-mask {baseline:.3f}) in {seconds:.2f} s\n  {gif}\n  {sheet}"
            )
    finally:
        server.stop()
    summary = out / "demo.json"
    summary.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"overlays: {out / 'overlays'}\nsummary: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

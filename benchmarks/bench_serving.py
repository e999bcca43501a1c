"""Serving overhead: a ``/track-api-files`` request through the real uvicorn server against
the in-process ``run_tracker`` call on the same frames.

The difference is what serving costs on top of the model: multipart upload, decoding the
frames and the geometries, encoding the answer's bitmaps, JSON, HTTP. The client's own
image encoding (PNG or JPEG) is reported beside it, since a caller pays it too.

Usage: ``python benchmarks/bench_serving.py [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repo_tools import bench as B
from repo_tools import machine
from repo_tools.baking import App, bake
from repo_tools.serving import reference_copy, serve_env, served, xmem_weights

NAME = "serving"
TITLE = "Serving overhead (`/track-api-files` through uvicorn vs in-process `run_tracker`)"
IDS = (3, 7)
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}


@dataclass(frozen=True)
class Case:
    height: int
    width: int
    fmt: str
    frames: int
    reps: int


@dataclass(frozen=True)
class Plan:
    flow: tuple[Case, ...]
    xmem: tuple[Case, ...]


FULL = Plan(
    flow=tuple(
        Case(h, w, fmt, 20, 3) for h, w in ((240, 427), (480, 854)) for fmt in ("PNG", "JPEG")
    ),
    xmem=(Case(240, 427, "PNG", 20, 1),),  # 480p XMem would add minutes for the same overhead
)
QUICK = Plan(
    flow=tuple(Case(h, w, fmt, 4, 2) for h, w in ((64, 114), (96, 171)) for fmt in ("PNG", "JPEG")),
    xmem=(Case(64, 114, "PNG", 3, 1),),
)


@dataclass
class Subject:
    """An app folder, its server environment and its model loaded in this process."""

    label: str
    app: App
    env: dict[str, str]
    tracker: Any


def decode_like_server(data: bytes) -> np.ndarray:
    """The RGB frame the server will track on (JPEG is lossy: compare on what it sees)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def measure_case(subject: Subject, base_url: str, case: Case) -> dict[str, Any]:
    """One frame size and format: client encode, request wall, answer decode, in-process."""
    from sly_vos.dev import client, synthetic
    from sly_vos.tracking import run_tracker

    clip = synthetic.make_clip(case.frames, case.height, case.width, ids=IDS, seed=0)
    first = clip.masks[0]
    encode_s, (files, settings) = B.timed(
        lambda: client.clip_request(clip.frames, first, IDS, case.fmt)
    )
    content_type = CONTENT_TYPES[case.fmt]

    def request(count: int) -> Any:
        body = (
            settings
            if count == len(files)
            else client.track_settings(count, settings["input_geometries"])
        )
        response = client.post_track(
            base_url, files[:count], body, content_type=content_type, timeout=3600
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"{subject.label}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return response

    request(2)  # warm-up, like the in-process side
    walls, response = [], None
    for _ in range(case.reps):
        seconds, response = B.timed(lambda: request(len(files)))
        walls.append(seconds)
    decode_s, served_masks = B.timed(
        lambda: client.answer_to_label_masks(response.json(), first, IDS)
    )

    frames = [decode_like_server(data) for data in files]
    run_tracker(subject.tracker, frames[:2], first)
    local_times, local = [], []
    for _ in range(case.reps):
        seconds, local = B.timed(lambda: run_tracker(subject.tracker, frames, first))
        local_times.append(seconds)
    wall, inproc = B.median(walls), B.median(local_times)
    row = {
        "app": subject.label,
        "height": case.height,
        "width": case.width,
        "format": case.fmt,
        "frames": case.frames,
        "objects": len(IDS),
        "reps": case.reps,
        "upload_bytes": sum(len(f) for f in files),
        "answer_bytes": len(response.content),
        "encode_ms": encode_s * 1000,
        "request_ms": wall * 1000,
        "requests_ms": walls,
        "inprocess_ms": inproc * 1000,
        "overhead_ms": (wall - inproc) * 1000,
        "overhead_pct": 100 * (wall - inproc) / inproc,
        "answer_decode_ms": decode_s * 1000,
        "agreement_pct": B.agreement_pct(local, served_masks),
    }
    print(
        f"  {subject.label} {case.height}x{case.width} {case.fmt}: request "
        f"{row['request_ms']:.0f} ms, in-process {row['inprocess_ms']:.0f} ms, overhead "
        f"{row['overhead_ms']:.0f} ms",
        flush=True,
    )
    return row


def serve(subject: Subject, cases: tuple[Case, ...], logs: Path) -> dict[str, Any]:
    """Start the app's server, measure every case, stop it (even on failure)."""
    with served(subject.app, subject.env, logs / f"{subject.label}.log") as server:
        rows = [measure_case(subject, server.base_url, case) for case in cases]
    return {"app": subject.label, "startup_s": server.startup_s, "rows": rows}


def flow_subject(tmp: Path) -> Subject:
    """The app baked with the default answers (optical-flow starter)."""
    app = bake(tmp / "baked")
    env = serve_env(app, tmp / "optical-flow", OMP_NUM_THREADS=str(machine.cpu_count()))
    return Subject("optical-flow", app, env, app.module("model").Tracker(None, "cpu"))


def xmem_subject(tmp: Path) -> Subject:
    """A copy of ``reference_xmem`` (the server must not write into the repository) with
    recipe weights given through its ``SERVE_XMEM_WEIGHTS`` override."""
    app = reference_copy(tmp)
    weights = xmem_weights()
    env = serve_env(app, tmp / "xmem", weights=weights, OMP_NUM_THREADS=str(machine.cpu_count()))
    return Subject("XMem", app, env, app.module("model").Tracker(weights, "cpu"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    threads = machine.use_all_cores()
    apps = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        apps.append(serve(flow_subject(tmp), plan.flow, tmp))
        if plan.xmem:
            apps.append(serve(xmem_subject(tmp), plan.xmem, tmp))
    return {
        "torch_threads": threads,
        "apps": apps,
        "rows": [row for app in apps for row in app["rows"]],
    }


# ---------------------------------------------------------------- rendering


def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "app",
        "frame (HxW)",
        "format",
        "frames",
        "objects",
        "upload MB",
        "client encode ms",
        "request wall ms",
        "in-process ms",
        "overhead ms",
        "overhead %",
        "answer decode ms",
        "mask agreement %",
    ]
    rows = [
        [
            r["app"],
            f"{r['height']}x{r['width']}",
            r["format"],
            r["frames"],
            r["objects"],
            B.fmt(r["upload_bytes"] / 1e6, 2),
            r["encode_ms"],
            r["request_ms"],
            r["inprocess_ms"],
            r["overhead_ms"],
            r["overhead_pct"],
            r["answer_decode_ms"],
            B.fmt(r["agreement_pct"], 3),
        ]
        for r in data["rows"]
    ]
    return headers, rows


def print_tables(data: dict[str, Any]) -> None:
    B.print_table(TITLE, *table_rows(data))
    for app in data["apps"]:
        print(f"{app['app']} server ready in {app['startup_s']:.1f} s")


def render(data: dict[str, Any]) -> str:
    reps = sorted({(r["app"], r["reps"]) for r in data["rows"]})
    startup = ", ".join(f"{a['app']} {a['startup_s']:.1f} s" for a in data["apps"])
    return "\n\n".join(
        [
            B.markdown_table(*table_rows(data)),
            "How measured: the app baked with the default answers (optical-flow starter) and a "
            "copy of `reference_xmem` (recipe weights through `SERVE_XMEM_WEIGHTS`) are served by "
            "the real `uvicorn main:model.app` on 127.0.0.1 (`sly_vos.testing.server.Server`, "
            f"server ready after: {startup}); both sides run on CPU with the same thread count "
            f"({data['torch_threads']}). A synthetic clip with 2 objects is encoded by the client "
            "(*client encode ms*: all frames to PNG or JPEG quality 95 plus the bitmap "
            "geometries) and POSTed as multipart; *request wall ms* is from sending to having the "
            "whole answer (upload, server-side decoding and checks, tracking, answer bitmaps, "
            "JSON), median of "
            + ", ".join(f"{n} ({app})" for app, n in reps)
            + " requests after a 2-frame warm-up request. *in-process ms* is "
            "`tracking.run_tracker` on the same decoded frames in the benchmark process (same "
            "warm-up, same repetitions). *overhead* = request wall − in-process, and in % of "
            "in-process. *answer decode ms* turns the JSON answer back into label masks on the "
            "client. *mask agreement* compares the served masks with the in-process ones "
            "(100% = the server tracks exactly what the model returns). XMem is served at 240p "
            "only: at 480p its tracking time grows ~4x while the overhead is the same kind.",
        ]
    )


if __name__ == "__main__":
    sys.exit(B.main(NAME, __doc__, run, print_tables))

"""SAM 2.1 (reference_sam2) on the CPU: ms/frame at 480p, time to the first ``/track_async``
result, memory over a long request.

Weights are random (``serve_sam2.model.write_random_weights``): the hiera-tiny
architecture at its real input size (1024x1024) costs what the real SAM 2.1 tiny costs, and
needs no download. Three measurements:

* the ``Tracker`` in-process on a 480x854 clip, 2 objects: the annotated frame (image
  encoder + memory encoder) apart, then each tracked frame; the memory bank fills over the
  first 7 frames, so the steady cost is the median of the frames after the 8th (the
  object pointers, up to 16, add little);
* the app served by uvicorn with a platform stand-in: the time from ``POST /track_async``
  (3 frames) to the first pull that holds a result;
* RSS over a 300-frame request through ``Tracker.track`` (streamed: frames generated one
  by one), sampled after each frame, at a reduced input size (``memory_size``, same
  parameters) so that 300 frames fit in minutes on 2 cores; and the RSS of the real-size
  run, frame by frame, past the window.

Usage: ``python benchmarks/bench_sam2.py [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from repo_tools import BENCH_DIR, REPO_ROOT, machine, on_sys_path
from repo_tools import bench as B
from repo_tools.baking import App
from repo_tools.serving import COPY_IGNORED, serve_env, served

NAME = "sam2"
TITLE = "SAM 2.1 tiny (reference_sam2, random weights) on the CPU"
SAM2_DIR = REPO_ROOT / "reference_sam2"
IDS = (1, 2)
OBJECT_IDS = (101, 102)
STEADY_AFTER = 8  # frames: the 7-frame memory bank is full from here on


@dataclass(frozen=True)
class Plan:
    height: int
    width: int
    image_size: int  # the model's input size (1024: SAM 2.1's real size)
    frames: int  # frames of the real-size tracker run, annotated one included
    async_frames: int  # frames tracked by the /track_async request
    memory_size: int  # input size of the long memory run
    memory_frames: int


FULL = Plan(480, 854, 1024, 24, 3, 128, 300)
QUICK = Plan(160, 284, 256, 4, 2, 128, 12)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return machine.peak_rss_bytes()


def clip(plan: Plan, frames: int) -> tuple[list[np.ndarray], np.ndarray]:
    """A synthetic 2-object clip at the plan's size (rendered small, upscaled)."""
    import cv2

    from sly_vos.dev import synthetic

    small = synthetic.make_clip(
        num_frames=min(frames, 8), height=plan.height // 4, width=plan.width // 4, ids=IDS, seed=3
    )
    size = (plan.width, plan.height)
    images = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in small.frames]
    mask = cv2.resize(small.masks[0], size, interpolation=cv2.INTER_NEAREST)
    return images, mask


def streamed(images: list[np.ndarray], count: int):  # type: ignore[no-untyped-def]
    """``count`` frames, made one by one (a slow pan over the clip's frames)."""
    for index in range(count):
        yield np.roll(images[index % len(images)], index, axis=1)


def track_run(weights: Path, plan: Plan, count: int) -> dict[str, Any]:
    """Per-frame seconds and RSS of one ``Tracker.track`` call over ``count`` frames."""
    from serve_sam2.model import Tracker

    images, mask = clip(plan, count)
    load_s, tracker = B.timed(lambda: Tracker(weights, "cpu"))
    seconds, rss = [], []
    last = time.perf_counter()
    for _ in tracker.track(streamed(images, count), mask):
        now = time.perf_counter()
        seconds.append(now - last)
        rss.append(rss_bytes())
        last = now
    return {"load_s": load_s, "seconds": seconds, "rss": rss}


def first_async_result(weights: Path, plan: Plan, work: Path) -> dict[str, Any]:
    """The served app: seconds from ``POST /track_async`` to the first pulled result."""
    from bench_protocol import track_async

    from sly_vos.testing.platform import PlatformStandIn

    root = work / "serve-sam2"
    shutil.copytree(SAM2_DIR, root, ignore=shutil.ignore_patterns(*COPY_IGNORED))
    app = App.at(root, "serve_sam2")
    images, mask = clip(plan, plan.async_frames + 1)
    frames = list(streamed(images, plan.async_frames + 1))
    truth = [mask] + [np.zeros_like(mask) for _ in frames[1:]]
    with PlatformStandIn() as stand_in:
        video = stand_in.add_video(frames, truth, name="sam2")
        figures = draw_figures(stand_in, video, mask)
        env = serve_env(
            app,
            work / "served",
            platform=stand_in,
            weights=weights,
            OMP_NUM_THREADS=str(machine.cpu_count()),
        )
        with served(app, env, work / "server.log") as server:
            job = track_async(server, stand_in, video, figures, plan.async_frames, "sam2")
            startup_s = server.startup_s
    first = next(p["t"] for p in job["pulls"] if p["results"])
    return {
        "startup_s": startup_s,
        "first_result_s": first,
        "wall_s": job["wall_s"],
        "frames": plan.async_frames,
    }


def draw_figures(stand_in: Any, video: int, mask: np.ndarray) -> list[int]:
    """One bitmap figure per object on frame 0 (bench_protocol's helper draws 3 objects)."""
    from sly_vos.dev.client import bitmap_geometry

    return [
        stand_in.add_figure(video, oid, 0, "bitmap", bitmap_geometry(mask == k)["data"])
        for k, oid in zip(IDS, OBJECT_IDS, strict=True)
    ]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, help="frames of the real-size tracker run")
    parser.add_argument("--memory-frames", type=int, help="frames of the long memory run")


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    if args.frames or args.memory_frames:  # a loaded machine: fewer frames, said in the JSON
        plan = replace(
            plan,
            frames=args.frames or plan.frames,
            memory_frames=args.memory_frames or plan.memory_frames,
        )
    on_sys_path(SAM2_DIR / "src", BENCH_DIR)  # serve_sam2 (and its runtime), bench_protocol
    from serve_sam2.model import small_config, write_random_weights

    with tempfile.TemporaryDirectory(prefix="bench-sam2-") as tmp_name:
        tmp = Path(tmp_name)
        real = write_random_weights(tmp / "real", small_config(plan.image_size))
        small = write_random_weights(tmp / "small", small_config(plan.memory_size))
        print(f"  tracker at {plan.image_size}, {plan.frames} frames", flush=True)
        tracker = track_run(real, plan, plan.frames)
        print(f"  /track_async, {plan.async_frames} frames", flush=True)
        served_run = first_async_result(real, plan, tmp)
        print(f"  memory at {plan.memory_size}, {plan.memory_frames} frames", flush=True)
        memory = track_run(small, plan, plan.memory_frames)
    info = machine.machine_info()
    return {
        "plan": asdict(plan),
        "cpu": info["cpu_model"],
        "threads": machine.cpu_count(),
        "load_average_after": info["load_average"],
        "tracker": tracker,
        "served": served_run,
        "memory": memory,
    }


# ---------------------------------------------------------------- rendering


def steady(seconds: list[float]) -> float | None:
    tail = seconds[STEADY_AFTER:] or seconds[1:]
    return B.median(tail) if tail else None


def marks(count: int) -> list[int]:
    """Frames whose RSS the table shows: 16 (the window is full), 30, 100, the last."""
    return [i for i in (16, 30, 100) if i < count - 1] + [count - 1]


def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    plan, tr, mem, srv = data["plan"], data["tracker"], data["memory"], data["served"]
    frame = f"{plan['height']}x{plan['width']}"
    headers = ["measurement", "value"]
    rows = [
        ["CPU (threads used)", f"{data['cpu']} ({data['threads']})"],
        ["load average after (1/5/15 min)", "/".join(map(str, data["load_average_after"]))],
        [f"model load s (S={plan['image_size']})", B.fmt(tr["load_s"], 2)],
        [f"annotated frame ms ({frame}, S={plan['image_size']})", tr["seconds"][0] * 1000],
        ["tracked frame ms, frames 1-7 median", B.median(tr["seconds"][1:8]) * 1000],
        [
            f"tracked frame ms, steady (median after frame {STEADY_AFTER})",
            None if steady(tr["seconds"]) is None else steady(tr["seconds"]) * 1000,
        ],
        ["fps, steady", None if not steady(tr["seconds"]) else 1 / steady(tr["seconds"])],
        [
            f"RSS MiB at S={plan['image_size']}: frame 1 / 8 / last ({len(tr['rss'])})",
            " / ".join(B.fmt(B.mib(tr["rss"][i])) for i in (1, min(8, len(tr["rss"]) - 1), -1)),
        ],
        [f"server start s (uvicorn, S={plan['image_size']} weights)", B.fmt(srv["startup_s"], 1)],
        [
            f"time to the first /track_async result s ({srv['frames']}-frame request)",
            B.fmt(srv["first_result_s"], 2),
        ],
        [
            f"RSS MiB over {len(mem['rss'])} frames at S={plan['memory_size']}: peak",
            B.mib(max(mem["rss"])),
        ],
        [
            "  at frame " + " / ".join(str(i) for i in marks(len(mem["rss"]))),
            " / ".join(B.fmt(B.mib(mem["rss"][i])) for i in marks(len(mem["rss"]))),
        ],
        [f"  ms/frame at S={plan['memory_size']} (median)", B.median(mem["seconds"][1:]) * 1000],
    ]
    return headers, rows


def print_tables(data: dict[str, Any]) -> None:
    B.print_table(TITLE, *table_rows(data))


def render(data: dict[str, Any]) -> str:
    plan = data["plan"]
    return "\n\n".join(
        [
            B.markdown_table(*table_rows(data)),
            "How measured (`benchmarks/bench_sam2.py`): random weights of SAM 2.1 hiera-tiny's "
            f"architecture (39 M parameters) at input size {plan['image_size']} (SAM 2.1's own), "
            f"float32 on the CPU, a synthetic {plan['height']}x{plan['width']} clip with 2 objects "
            "(rendered at 1/4 size and upscaled), frames generated one by one as `track` asks. "
            "The served run is the real `uvicorn main:model.app` of a copy of reference_sam2 "
            "with a `PlatformStandIn` as its platform; the first result is the first "
            "`/pop_tracking_results` pull (every 0.25 s) that holds a figure. The "
            f"{plan['memory_frames']}-frame memory run uses input size {plan['memory_size']} "
            "(same parameters, same session bookkeeping; a 300-frame request at 1024 takes about "
            "an hour on 2 shared cores): RSS flat after the 16-frame window means the app drops "
            "what the session no longer reads. Fewer frames than the plan's (24 at 1024, 300 "
            "for memory) mean the run was cut to fit a loaded machine (`--frames`, "
            "`--memory-frames`); the load average is in the table. Random weights give noise "
            "masks; only time and memory mean something here.",
        ]
    )


if __name__ == "__main__":
    sys.exit(B.main(NAME, __doc__, run, print_tables, add_args=add_args))

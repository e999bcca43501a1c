"""Labeling-tool protocol: the server's memory during one long ``/track_async`` request,
against the same request over fewer frames.

The app baked with the default answers (optical-flow starter) is served by uvicorn with a
``PlatformStandIn`` (the Supervisely platform's stand-in on 127.0.0.1) as its
``SERVER_ADDRESS``. The stand-in holds one synthetic video; the tool's side sends one
``/track_async`` request for its 3 objects drawn on frame 0 and pulls the results with
``/pop_tracking_results`` until the job is finished, while a thread samples the server's RSS.
The claim measured: frames stream through the server (downloaded one ahead of the model,
each result queued as soon as it exists and taken by the next pull), so its memory does not
grow with the request's length beyond the results not yet pulled.

Usage: ``python benchmarks/bench_protocol.py [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from repo_tools import bench as B
from repo_tools import machine
from repo_tools.baking import App, bake
from repo_tools.serving import serve_env, served

NAME = "protocol"
TITLE = "Labeling-tool protocol: server memory of one `/track_async` request by its length"
IDS = (1, 2, 3)  # ids of the synthetic clip's objects
OBJECT_IDS = (101, 102, 103)  # the platform's object ids of the figures drawn for them
WARMUP_FRAMES = 4  # a short request first: lazy allocations are not the request's cost
POLL_S = 0.25  # the tool's pull interval
SAMPLE_S = 0.05  # RSS sampling interval
SETTLE_S = 6.0  # time the allocator gets to hand memory back before "idle" and "after"


@dataclass(frozen=True)
class Plan:
    height: int
    width: int
    render_scale: int  # the clip is rendered this many times smaller and upscaled
    lengths: tuple[int, ...]  # frames tracked after the annotated one, one request each
    seed: int = 5


FULL = Plan(480, 854, 4, (299, 60))
QUICK = Plan(96, 171, 1, (30, 10))


# ---------------------------------------------------------------- the video


def make_video(plan: Plan) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames and ground truth of ``max(lengths) + 1`` frames at the plan's size: rendered
    at ``1 / render_scale`` and upscaled (rendering 480p costs ~0.1 s a frame), the way
    the runtime's reliability suite makes its 1080p frames."""
    import cv2

    from sly_vos.dev import synthetic

    count = max(plan.lengths) + 1
    scale = plan.render_scale
    clip = synthetic.make_clip(
        num_frames=count,
        height=round(plan.height / scale),
        width=round(plan.width / scale),
        ids=IDS,
        seed=plan.seed,
    )
    if scale == 1:
        return clip.frames, clip.masks
    size = (plan.width, plan.height)
    frames = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in clip.frames]
    masks = [cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in clip.masks]
    return frames, masks


def draw_figures(stand_in: Any, video_id: int, first_mask: np.ndarray) -> list[int]:
    """One bitmap figure per object on frame 0, as the user would have drawn them."""
    from sly_vos.dev.client import bitmap_geometry

    return [
        stand_in.add_figure(
            video_id, object_id, 0, "bitmap", bitmap_geometry(first_mask == obj_id)["data"]
        )
        for obj_id, object_id in zip(IDS, OBJECT_IDS, strict=True)
    ]


# ---------------------------------------------------------------- the tool's side


class RssTrace:
    """Samples a process's RSS every ``SAMPLE_S`` in a thread: ``(seconds, bytes)``."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.began = time.monotonic()
        self.samples: list[tuple[float, int]] = []

    def _sample(self) -> None:
        self.samples.append((time.monotonic() - self.began, int(self._process.memory_info().rss)))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def __enter__(self) -> RssTrace:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)


def settled_rss(server: Any) -> int:
    """The server's RSS once the allocator had ``SETTLE_S`` to return memory (the lowest
    value seen)."""
    deadline = time.monotonic() + SETTLE_S
    value = server.rss()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        value = min(value, server.rss())
    return value


def track_async(
    server: Any, stand_in: Any, video_id: int, figure_ids: list[int], frames: int, track_id: str
) -> dict[str, Any]:
    """One ``/track_async`` request pulled to its end: every pull's time, progress, answer
    size and results (the raw ``FigureInfo`` lists)."""
    context = {
        "videoId": video_id,
        "frameIndex": 0,
        "frames": frames,
        "trackId": track_id,
        "figures": [stand_in.figure_json(fid) for fid in figure_ids],
    }
    creds = {"server_address": stand_in.url, "api_token": stand_in.token, "state": {}}
    began = time.monotonic()
    answer = server.post("/track_async", json={"context": context, **creds}, timeout=60)
    if answer.status_code != 200:
        raise RuntimeError(f"/track_async: HTTP {answer.status_code}: {answer.text[:500]}")
    uuid = answer.json()["inference_request_uuid"]
    pulls: list[dict[str, Any]] = []
    results: list[list[Any]] = []
    deadline = began + 120 + 30 * frames
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {uuid} did not finish in {deadline - began:.0f} s")
        response = server.post(
            "/pop_tracking_results",
            json={"context": {"inference_request_uuid": uuid}, **creds},
            timeout=60,
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"/pop_tracking_results: HTTP {response.status_code}: {response.text[:500]}"
            )
        body = response.json()
        results += body["pending_results"]
        pulls.append(
            {
                "t": time.monotonic() - began,
                "current": body["progress"]["current"],
                "results": len(body["pending_results"]),
                "bytes": len(response.content),
            }
        )
        if body.get("exception"):
            raise RuntimeError(f"job {uuid} failed: {body['exception']}")
        if body["finished"] and not body["pending_results"]:
            break
        time.sleep(POLL_S)
    wall = time.monotonic() - began
    if body["stage"] != "Finished" or body["progress"]["current"] != frames:
        raise RuntimeError(f"job {uuid} ended {body['stage']} at {body['progress']}")
    return {"uuid": uuid, "wall_s": wall, "pulls": pulls, "results": results, "began": began}


# ---------------------------------------------------------------- analysis


def figure_masks(
    results: list[list[Any]], height: int, width: int
) -> dict[int, dict[int, np.ndarray]]:
    """``{frame: {objectId: mask}}`` of the pulled results (the SDK's ``FigureInfo``)."""
    from supervisely.api.video.video_figure_api import FigureInfo

    from sly_vos.dev.client import geometry_mask

    out: dict[int, dict[int, np.ndarray]] = {}
    for raw in results:
        figure = dict(zip(FigureInfo._fields, raw, strict=True))
        mask = geometry_mask(
            {"type": figure["geometry_type"], "data": figure["geometry"]}, height, width
        )
        per_frame = out.setdefault(int(figure["frame_index"]), {})
        object_id = int(figure["object_id"])
        per_frame[object_id] = per_frame.get(object_id, np.zeros_like(mask)) | mask
    return out


def mean_j(
    found: dict[int, dict[int, np.ndarray]] | None, truth: list[np.ndarray], frames: int
) -> float:
    """Mean IoU of the tracked figures against the ground truth over frames 1..``frames``;
    ``found=None`` scores copying frame 0's objects to every frame (no tracking at all)."""
    scores = []
    for frame in range(1, frames + 1):
        for obj_id, object_id in zip(IDS, OBJECT_IDS, strict=True):
            gt = truth[frame] == obj_id
            if found is None:
                pred = truth[0] == obj_id
            else:
                pred = found.get(frame, {}).get(object_id, np.zeros_like(gt))
            union = np.count_nonzero(gt | pred)
            scores.append(1.0 if union == 0 else np.count_nonzero(gt & pred) / union)
    return float(np.mean(scores))


def progress_trace(
    samples: list[tuple[float, int]], pulls: list[dict[str, Any]], offset_s: float
) -> list[tuple[float, int, int]]:
    """``(seconds, RSS, frames done)`` of every sample taken after the request was sent; a
    sample's frame count is the progress of the last pull before it (``offset_s``: the
    request's start on the sampler's clock)."""
    times = np.array([p["t"] + offset_s for p in pulls])
    done = np.array([p["current"] for p in pulls])
    trace = []
    for t, rss in samples:
        index = int(np.searchsorted(times, t, side="right")) - 1
        if index >= 0:
            trace.append((round(t - offset_s, 3), int(rss), int(done[index])))
    return trace


def rss_by_progress(
    trace: list[tuple[float, int, int]], frames: int
) -> tuple[list[float | None], float | None]:
    """Peak RSS in each quarter of the request's frames, and the RSS growth per frame: a
    least-squares line through the samples between half and 90% of the frames, RSS against
    frames done (the last tenth is left out: the job hands its memory back as it ends,
    before the pulls have seen its last frames)."""
    marks = [(n, rss) for _, rss, n in trace]
    quarters: list[float | None] = []
    for q in range(4):
        low, high = q * frames / 4, (q + 1) * frames / 4
        inside = [rss for n, rss in marks if low < n <= high or (q == 0 and n == 0)]
        quarters.append(float(max(inside)) if inside else None)
    half = [(n, rss) for n, rss in marks if frames / 2 <= n <= 0.9 * frames]
    slope = None
    if len({n for n, _ in half}) >= 3:
        x = np.array([n for n, _ in half], dtype=float)
        y = np.array([rss for _, rss in half], dtype=float)
        slope = float(np.polyfit(x, y, 1)[0])
    return quarters, slope


# ---------------------------------------------------------------- one length


def measure(
    app: App,
    plan: Plan,
    frames_list: list[np.ndarray],
    truth: list[np.ndarray],
    length: int,
    work: Path,
) -> dict[str, Any]:
    """A fresh server and stand-in: warm-up request, idle RSS, the measured request."""
    from sly_vos.testing.platform import PlatformStandIn

    with PlatformStandIn() as stand_in:
        video_id = stand_in.add_video(
            frames_list[: length + 1], truth[: length + 1], name=f"long-{length}"
        )
        figure_ids = draw_figures(stand_in, video_id, truth[0])
        env = serve_env(
            app, work / f"len-{length}", platform=stand_in, OMP_NUM_THREADS=str(machine.cpu_count())
        )
        with served(app, env, work / f"server-{length}.log") as server:
            startup_s = server.startup_s
            warm = track_async(
                server, stand_in, video_id, figure_ids, WARMUP_FRAMES, f"warm-up-{length}"
            )
            idle = settled_rss(server)
            with RssTrace(server.proc.pid) as trace:
                job = track_async(
                    server, stand_in, video_id, figure_ids, length, f"measured-{length}"
                )
            after = settled_rss(server)
            alive = server.alive()
        downloads = sum(
            1
            for c in stand_in.calls_to("videos.download-frame")
            if isinstance(c.body, dict) and c.body.get("videoId") == video_id
        )
    samples = progress_trace(trace.samples, job["pulls"], job["began"] - trace.began)
    quarters, slope = rss_by_progress(samples, length)
    found = figure_masks(job["results"], plan.height, plan.width)
    frame_bytes = plan.height * plan.width * 3
    pulled_bytes = sum(p["bytes"] for p in job["pulls"])
    row = {
        "frames": length,
        "height": plan.height,
        "width": plan.width,
        "objects": len(IDS),
        "startup_s": startup_s,
        "warmup_frames": WARMUP_FRAMES,
        "warmup_s": warm["wall_s"],
        "idle_rss": idle,
        "peak_rss": trace.peak,
        "after_rss": after,
        "peak_over_idle": trace.peak - idle,
        "after_over_idle": after - idle,
        "peak_over_idle_frames": (trace.peak - idle) / frame_bytes,
        "frame_bytes": frame_bytes,
        "rss_quarters": quarters,
        "rss_slope_bytes_per_frame": slope,
        "wall_s": job["wall_s"],
        "s_per_frame": job["wall_s"] / length,
        "pulls": len(job["pulls"]),
        "results": len(job["results"]),
        "results_bytes": pulled_bytes,
        "max_results_per_pull": max(p["results"] for p in job["pulls"]),
        "frames_downloaded": downloads - (WARMUP_FRAMES + 1),
        "samples": len(trace.samples),
        "trace": samples,  # (seconds since the request, RSS bytes, frames done)
        "mean_j": mean_j(found, truth, length),
        "mean_j_copy_first": mean_j(None, truth, length),
        "server_alive": alive,
    }
    print(
        f"  {length:>4} frames: peak − idle {B.mib(row['peak_over_idle']):.1f} MiB "
        f"({row['peak_over_idle_frames']:.1f} frames), after − idle "
        f"{B.mib(row['after_over_idle']):.1f} MiB, growth "
        f"{B.fmt(None if slope is None else slope / 1024, 1)} KiB/frame, "
        f"{row['s_per_frame']:.2f} s/frame, results {B.mib(pulled_bytes):.2f} MiB, "
        f"J {row['mean_j']:.3f}",
        flush=True,
    )
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-protocol-") as tmp_name:
        tmp = Path(tmp_name)
        app = bake(tmp / "baked")  # the default answers: optical-flow starter
        app.on_path()  # the stand-in and the client helpers of its copy of the runtime
        gen_s, (frames_list, truth) = B.timed(lambda: make_video(plan))
        print(
            f"  video: {len(frames_list)} frames of {plan.width}x{plan.height} in {gen_s:.1f} s",
            flush=True,
        )
        rows = [measure(app, plan, frames_list, truth, n, tmp) for n in plan.lengths]
    return {
        "plan": asdict(plan),
        "generate_s": gen_s,
        "poll_s": POLL_S,
        "sample_s": SAMPLE_S,
        "rows": sorted(rows, key=lambda r: r["frames"]),
    }


# ---------------------------------------------------------------- rendering


def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "frames tracked",
        "frame (HxW)",
        "idle RSS MiB",
        "peak − idle MiB",
        "after − idle MiB",
        "RSS growth KiB/frame",
        "results pulled MiB",
        "figures",
        "s/frame",
        "wall s",
        "J (sanity)",
        "J copying frame 0",
    ]
    rows = []
    for r in data["rows"]:
        slope = r["rss_slope_bytes_per_frame"]
        rows.append(
            [
                r["frames"],
                f"{r['height']}x{r['width']}",
                B.mib(r["idle_rss"]),
                B.mib(r["peak_over_idle"]),
                B.mib(r["after_over_idle"]),
                None if slope is None else slope / 1024,
                B.fmt(B.mib(r["results_bytes"]), 2),
                r["results"],
                B.fmt(r["s_per_frame"], 2),
                r["wall_s"],
                B.fmt(r["mean_j"], 3),
                B.fmt(r.get("mean_j_copy_first"), 3),
            ]
        )
    return headers, rows


def quarter_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["frames tracked", "peak RSS MiB, 1st quarter of the frames", "2nd", "3rd", "4th"]
    rows = [[r["frames"], *[B.mib(q) for q in r["rss_quarters"]]] for r in data["rows"]]
    return headers, rows


def verdict(data: dict[str, Any]) -> str:
    rows = data["rows"]
    if len(rows) < 2:
        return ""
    short, long = rows[0], rows[-1]
    extra = long["peak_over_idle"] - short["peak_over_idle"]
    results = long["results_bytes"] - short["results_bytes"]
    quarters = [q for q in long["rss_quarters"] if q is not None]
    after = " and ".join(f"{B.mib(r['after_over_idle']):+.1f}" for r in rows)
    drift = (
        f" Within the {long['frames']}-frame request the peak RSS of the last quarter of "
        f"its frames is {B.mib(quarters[-1] - quarters[0]):+.1f} MiB from the first "
        "quarter's."
        if len(quarters) >= 2
        else ""
    )
    return (
        f"The peak above idle is {B.mib(short['peak_over_idle']):.1f} MiB for "
        f"{short['frames']} frames and {B.mib(long['peak_over_idle']):.1f} MiB for "
        f"{long['frames']} ({B.mib(extra):+.1f} MiB, {extra / long['frame_bytes']:+.1f} "
        f"decoded frames' worth, for {long['frames'] - short['frames']} more frames): "
        "a working set that does not depend on the request's length (the model's buffers "
        "and the frames in flight), not the request's frames, which would take "
        f"{B.mib(long['frames'] * long['frame_bytes']):.0f} MiB decoded if they were "
        f"held. The results grow by {B.mib(results):.2f} MiB; they leave the "
        f"server with each pull (at most {long['max_results_per_pull']} figures waited "
        f"for one).{drift} After the job the RSS is back to idle ({after} MiB from it)."
    )


def print_tables(data: dict[str, Any]) -> None:
    B.print_table(TITLE, *table_rows(data))
    B.print_table("Peak RSS by progress", *quarter_rows(data))
    print(verdict(data))


def render(data: dict[str, Any]) -> str:
    plan = data["plan"]
    scale = plan["render_scale"]
    made = (
        f"rendered at 1/{scale} size and upscaled with OpenCV (bilinear frames, nearest masks)"
        if scale > 1
        else "rendered at that size"
    )
    return "\n\n".join(
        [
            B.markdown_table(*table_rows(data)),
            B.markdown_table(*quarter_rows(data)),
            verdict(data),
            "How measured: the app baked with the default answers (optical-flow starter) is "
            "served by the real `uvicorn main:model.app` on 127.0.0.1 with a "
            "`sly_vos.testing.platform.PlatformStandIn` (the platform's API on 127.0.0.1) as its "
            "`SERVER_ADDRESS`/`API_TOKEN` (also sent in the requests, like the platform does), "
            "`MALLOC_ARENA_MAX=2` as in the image. The stand-in holds one synthetic video "
            f"(`synthetic.make_clip`, {len(IDS)} objects, seed {plan['seed']}, {made}; frames "
            "served as JPEG quality 95) with one bitmap figure per object drawn on frame 0. "
            "Each length gets a fresh server and stand-in: first a "
            f"{WARMUP_FRAMES}-frame `/track_async` request (lazy allocations), then *idle RSS* "
            f"(the lowest RSS over {SETTLE_S:.0f} s), then one `/track_async` request (context: "
            "videoId, frameIndex 0, frames, trackId, figures = the stand-in's figure JSON) pulled "
            f"with `/pop_tracking_results` every {data['poll_s']} s until finished, while a "
            f"thread samples the server's RSS (psutil) every {data['sample_s']} s. *peak − idle* "
            "is the largest sample above idle (a decoded frame is HxWx3 bytes); "
            f"*after − idle* is the lowest RSS over {SETTLE_S:.0f} s after the job finished. "
            "*RSS growth* is the slope of a least-squares line through the samples taken between "
            "half and 90% of the frames (RSS against frames done, from the pulls' progress); the "
            "second "
            "table is the peak RSS in each quarter of the frames. *results pulled* is the bytes "
            "of every `/pop_tracking_results` answer (*figures* of them); *s/frame* = wall time "
            "from sending the request to the last pull / frames tracked (download, optical flow "
            "at short side 360, geometry encoding, progress to the platform, the pulls). *J* "
            "compares the pulled figures with the video's ground truth (a check that it tracked; "
            "*J copying frame 0* is what not tracking at all scores). "
            "Frames streaming through the server shows as a peak and a growth per frame that do "
            "not rise with the length.",
        ]
    )


if __name__ == "__main__":
    sys.exit(B.main(NAME, __doc__, run, print_tables))

"""On a GPU: XMem and SAM 2.1 tiny, fp32 against half precision, masks and frames per second.

The prepared device check (issue 18, item 5): one script for a session that is lent a GPU.
Each model tracks the same synthetic clip (480x854, 3 objects, 30 frames) once in fp32 and
once in fp16 (XMem's ``precision``; SAM 2.1 under ``torch.autocast``), after a 3-frame
warm-up of each. Reported per run: frames per second after the annotated frame (the GPU
synchronised by each mask's copy to the host) and peak GPU memory; per model: how many
pixels the fp16 masks share with the fp32 ones. Weights are random (XMem's recipe weights,
SAM 2.1 hiera-tiny initialised at random): the speed is the real models' speed, the
agreement only says that fp16 runs the whole path (random weights make near-ties common, so
it is no accuracy figure).

Usage: ``python benchmarks/bench_cuda.py [--device cuda] [--frames N] [--out FILE]``;
``--quick --device cpu`` is a dry run of the code path on a machine without a GPU (bf16
stands in for fp16 there, tiny sizes, numbers mean nothing). Without CUDA and without
``--device cpu`` it stops with one line. ``make bench`` runs it where torch sees a GPU. On a
lent GPU machine with its own torch (no ``make setup``), ``scripts/device_check.sh`` is the
whole check: ``prepare`` here, ``run`` there (it also renders RESULTS.md section 9).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from repo_tools import REPO_ROOT, machine, on_sys_path, reference_on_path
from repo_tools import bench as B
from repo_tools.serving import xmem_weights

NAME = "cuda"
TITLE = "On a GPU: XMem and SAM 2.1 tiny, fp32 vs fp16 (random weights)"
IDS = (1, 2, 3)
WARMUP = 3


@dataclass(frozen=True)
class Plan:
    height: int
    width: int
    frames: int
    sam2_image_size: int  # SAM 2.1's input size (1024: the real one)


FULL = Plan(480, 854, 30, 1024)
QUICK = Plan(96, 176, 5, 128)


def half_of(device: str) -> str:
    """The half precision compared with fp32: fp16 on CUDA, bf16 (its CPU stand-in) else."""
    return "fp16" if device.startswith("cuda") else "bf16"


def make_clip(plan: Plan) -> tuple[list[np.ndarray], np.ndarray]:
    """A synthetic 3-object clip at the plan's size."""
    from sly_vos.dev import synthetic

    clip = synthetic.make_clip(
        num_frames=plan.frames, height=plan.height, width=plan.width, ids=IDS, seed=5
    )
    return list(clip.frames), clip.masks[0]


def timed_masks(masks: Iterator[np.ndarray], sync: Callable[[], None]) -> dict[str, Any]:
    """Masks of one run and its frames per second after the annotated frame."""
    out, stamps = [], []
    for mask in masks:
        sync()
        out.append(mask)
        stamps.append(time.perf_counter())
    later = stamps[-1] - stamps[0]
    return {"masks": out, "fps": (len(out) - 1) / later if later > 0 else None}


def run_model(
    name: str,
    run: Callable[[list[np.ndarray], np.ndarray, str], Iterator[np.ndarray]],
    clip: tuple[list[np.ndarray], np.ndarray],
    device: str,
) -> dict[str, Any]:
    """fp32 and half runs of one model, warm-up first; the fp32 / half agreement."""
    import torch

    frames, mask = clip
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows, masks = [], {}
    for precision in ("fp32", half_of(device)):
        list(run(frames[:WARMUP], mask, precision))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result = timed_masks(run(frames, mask, precision), sync)
        masks[precision] = result.pop("masks")
        peak = torch.cuda.max_memory_allocated() if cuda else None
        rows.append({"model": name, "precision": precision, **result, "peak_gpu_bytes": peak})
        print(f"  {name} {precision}: {B.fmt(result['fps'], 2)} fps", flush=True)
    agree = B.agreement_pct(masks["fp32"], masks[half_of(device)])
    for row in rows:
        row["agreement_with_fp32_pct"] = agree
    return {"rows": rows}


def xmem_runner(device: str) -> Callable[..., Iterator[np.ndarray]]:
    from xmem import load_network, propagate

    network = load_network(xmem_weights(), device=device)

    def run(frames: list[np.ndarray], mask: np.ndarray, precision: str) -> Iterator[np.ndarray]:
        return propagate(network, frames, mask, size=480, precision=precision)

    return run


def sam2_runner(device: str, image_size: int, folder: Path) -> Callable[..., Iterator[np.ndarray]]:
    import torch

    on_sys_path(REPO_ROOT / "reference_sam2" / "src")
    from serve_sam2.model import Tracker, small_config, write_random_weights

    tracker = Tracker(write_random_weights(folder, small_config(image_size)), device)
    device_type = torch.device(device).type

    def run(frames: list[np.ndarray], mask: np.ndarray, precision: str) -> Iterator[np.ndarray]:
        cast = (
            contextlib.nullcontext()
            if precision == "fp32"
            else torch.autocast(
                device_type, dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
            )
        )
        with cast:  # autocast is per thread: it holds while the generator runs here
            yield from tracker.track(frames, mask)

    return run


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--frames", type=int, help="frames per run (default 30)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_cuda: no CUDA device here (torch.cuda.is_available() is False)")
    plan = QUICK if args.quick else FULL
    if args.frames:
        plan = replace(plan, frames=max(WARMUP + 1, args.frames))
    reference_on_path()  # xmem, serve_xmem and their copy of the runtime (sly_vos)
    clip = make_clip(plan)
    rows: list[dict[str, Any]] = []
    rows += run_model("XMem", xmem_runner(args.device), clip, args.device)["rows"]
    with tempfile.TemporaryDirectory(prefix="bench-cuda-") as tmp:
        sam2 = sam2_runner(args.device, plan.sam2_image_size, Path(tmp))
        rows += run_model("SAM 2.1 tiny", sam2, clip, args.device)["rows"]
    gpu = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None
    return {
        "plan": asdict(plan),
        "device": args.device,
        "gpu": gpu,
        "cpu": machine.machine_info()["cpu_model"],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "rows": rows,
    }


def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["model", "precision", "fps", "peak GPU MiB", "pixels equal to fp32 %"]
    rows = [
        [
            r["model"],
            r["precision"],
            B.fmt(r["fps"], 2),
            B.fmt(B.mib(r["peak_gpu_bytes"]), 0),
            B.fmt(r["agreement_with_fp32_pct"], 3),
        ]
        for r in data["rows"]
    ]
    return headers, rows


def print_tables(data: dict[str, Any]) -> None:
    print(f"device: {data['device']} ({data['gpu'] or data['cpu']})")
    B.print_table(TITLE, *table_rows(data))


def render(data: dict[str, Any]) -> str:
    plan = data["plan"]
    return "\n\n".join(
        [
            f"**Device: {data['gpu'] or data['device']}** (host CPU {data['cpu']}; torch "
            f"{data['torch']}, CUDA {data['cuda']}).",
            B.markdown_table(*table_rows(data)),
            f"How measured: a synthetic {plan['height']}x{plan['width']} clip, 3 objects, "
            f"{plan['frames']} frames, the same for both models; each precision after a "
            f"{WARMUP}-frame warm-up; fps over the frames after the annotated one. XMem works "
            "at 480p (`propagate(size=480, precision=...)`, fp16 autocast being its CUDA "
            "default); SAM 2.1 tiny at "
            f"{plan['sam2_image_size']}x{plan['sam2_image_size']} under `torch.autocast`. "
            "Random weights: the speed is the real models', the agreement only shows fp16 runs "
            "the whole path (near-ties are common with random weights; no accuracy figure).",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(B.main(NAME, __doc__, run, print_tables, add_args=add_args))

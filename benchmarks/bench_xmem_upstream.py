"""XMem against upstream XMem (hkchengrex/XMem), side by side in one process on the same
weights and clip: ms/frame of each, their ratio, and how far their masks agree.

Upstream is imported from a checkout the user points to (``--upstream PATH`` or the
``XMEM_UPSTREAM`` environment variable); nothing of it is copied into this repository.
Get one with ``git clone https://github.com/hkchengrex/XMem /some/where/XMem``.

Usage: ``python benchmarks/bench_xmem_upstream.py --upstream PATH [--quick] [--out FILE]
[--frames-scale F]``. ``XMEM_UPSTREAM=PATH run_all.py --only xmem_upstream`` runs it in its
own process (``run_all.py`` skips it, saying how to get upstream, when ``XMEM_UPSTREAM`` is
unset). Prints a table and writes ``results/xmem_upstream.json``.

Both run at the working resolution directly (frames made at 240x432 / 480x864, multiples
of 16, so neither resizes nor pads), fp32 and CPU bfloat16 autocast, 1 and 3 objects.
The pairs are measured interleaved (upstream, ours, upstream, ours) so that both see the
same state of a shared machine; the ratio is upstream / ours of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repo_tools import bench as B
from repo_tools import machine, on_sys_path, reference_on_path, runtime_on_path
from repo_tools.serving import xmem_weights

NAME = "xmem_upstream"
TITLE = "XMem vs upstream XMem (same weights, same clip, one process)"
HOW_TO_GET = (
    "upstream XMem is not here. Get it with\n"
    "    git clone https://github.com/hkchengrex/XMem /some/where/XMem\n"
    "and run this script with --upstream /some/where/XMem (or set XMEM_UPSTREAM)."
)
IDS = (3, 7, 11)
UPSTREAM_PACKAGES = ("model", "inference", "util")  # top-level names upstream imports as


@dataclass(frozen=True)
class Case:
    """One configuration: frame size, objects, precision, and how many frames it runs."""

    height: int
    width: int
    objects: int
    precision: str
    frames: int


@dataclass(frozen=True)
class Plan:
    """Sizes of one run. 3-object and 480p cases use fewer frames to fit the budget; bf16 is
    emulated on CPUs without native bf16, so it gets fewer frames still."""

    sizes: tuple[tuple[int, int], ...]
    objects: tuple[int, ...]
    precisions: tuple[str, ...]
    frames: dict[tuple[int, int, str], int] = field(default_factory=dict)
    reps: int = 2

    def cases(self) -> list[Case]:
        return [
            Case(h, w, k, p, self.frames[(h, k, p)])
            for p in self.precisions
            for (h, w) in self.sizes
            for k in self.objects
        ]


FULL = Plan(
    ((240, 432), (480, 864)),
    (1, 3),
    ("fp32", "bf16"),
    {
        (240, 1, "fp32"): 16,
        (240, 3, "fp32"): 11,
        (480, 1, "fp32"): 8,
        (480, 3, "fp32"): 6,
        (240, 1, "bf16"): 11,
        (240, 3, "bf16"): 8,
        (480, 1, "bf16"): 6,
        (480, 3, "bf16"): 4,
    },
)
# Upstream needs more memory elements than top_k (30): 96x176 gives 6x11 per frame.
QUICK = Plan(
    ((96, 176),),
    (1, 3),
    ("fp32", "bf16"),
    {(96, k, p): 4 for k in (1, 3) for p in ("fp32", "bf16")},
    reps=1,
)


# ------------------------------------------------------------------------ upstream
def upstream_path(given: str | None) -> Path | None:
    """The checkout from ``--upstream`` or ``XMEM_UPSTREAM``, if it looks like XMem."""
    text = given or os.environ.get("XMEM_UPSTREAM")
    if not text:
        return None
    path = Path(text).expanduser().resolve()
    if (
        not (path / "model" / "network.py").is_file()
        or not (path / "inference" / "inference_core.py").is_file()
    ):
        raise SystemExit(
            f"{path} is not an XMem checkout (no model/network.py or "
            f"inference/inference_core.py).\n{HOW_TO_GET}"
        )
    return path


def import_upstream(path: Path) -> tuple[type, type]:
    """Upstream's ``XMem`` network and ``InferenceCore``, imported from ``path``.

    Only the inference modules are imported (they need torch alone). Upstream's top-level
    package names are generic (``model``, ``inference``, ``util``): refuse to run if
    something else of that name is already imported rather than mixing the two.
    """
    for name in UPSTREAM_PACKAGES:
        module = sys.modules.get(name)
        if module is not None and not str(getattr(module, "__file__", "") or "").startswith(
            str(path)
        ):
            raise SystemExit(
                f"a module named {name!r} is already imported from "
                f"{getattr(module, '__file__', '?')}; cannot import upstream XMem"
            )
    on_sys_path(path)  # deliberately: the checkout the user named
    from inference.inference_core import InferenceCore  # type: ignore[import-not-found]
    from model import resnet as upstream_resnet  # type: ignore[import-not-found]
    from model.network import XMem  # type: ignore[import-not-found]

    # XMem's constructor asks for ImageNet-pretrained ResNets from the internet; every one
    # of those weights is overwritten by the strict load below, so build them untrained.
    for builder in ("resnet18", "resnet50"):
        original = getattr(upstream_resnet, builder)
        if not getattr(original, "_no_download", False):

            def untrained(
                pretrained: bool = True, extra_dim: int = 0, _build: Callable = original
            ) -> Any:
                return _build(pretrained=False, extra_dim=extra_dim)

            untrained._no_download = True  # type: ignore[attr-defined]
            setattr(upstream_resnet, builder, untrained)
    return XMem, InferenceCore


def upstream_network(xmem_cls: type, state_dict: dict) -> Any:
    """Upstream's network with ``state_dict`` loaded strictly, eval mode, CPU."""
    import torch

    config = {"key_dim": 64, "value_dim": 512, "hidden_dim": 64, "single_object": False}
    with contextlib.redirect_stdout(sys.stderr):
        net = xmem_cls(config, None).eval()
    net.load_state_dict(state_dict, strict=True)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(torch.device("cpu"))


def upstream_masks(
    core_cls: type,
    net: Any,
    frames: list[np.ndarray],
    mask: np.ndarray,
    config: dict,
    precision: str,
) -> Iterator[np.ndarray]:
    """Upstream's own per-frame loop (as its eval.py: step, argmax, ids back), yielding a
    uint8 mask per frame; bf16 wraps each step in CPU autocast."""
    import torch

    ids = [int(i) for i in np.unique(mask) if i != 0]
    lut = np.array([0] + ids, dtype=np.uint8)
    core = core_cls(
        net,
        {
            **config,
            "key_dim": net.key_dim,
            "value_dim": net.value_dim,
            "hidden_dim": net.hidden_dim,
        },
    )
    core.set_all_labels(list(range(1, len(ids) + 1)))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    cast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    for t, frame in enumerate(frames):
        with torch.no_grad(), cast:
            image = (torch.from_numpy(frame).permute(2, 0, 1).float() / 255 - mean) / std
            if t == 0:
                onehot = torch.stack([torch.from_numpy(mask == i) for i in ids]).float()
                prob = core.step(image, onehot, valid_labels=list(range(1, len(ids) + 1)))
            else:
                prob = core.step(image, end=(t == len(frames) - 1))
            out = lut[torch.argmax(prob.float(), dim=0).numpy()]
        yield out


# ------------------------------------------------------------------------ timing
def per_frame(masks: Iterator[np.ndarray]) -> tuple[float, float, list[np.ndarray]]:
    """(first-frame s, ms per later frame, masks) of a mask generator."""
    out: list[np.ndarray] = []
    start = time.perf_counter()
    first = None
    for m in masks:
        out.append(m)
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    later = (total - first) / max(1, len(out) - 1)
    return first, later * 1000, out


def run_case(
    case: Case, ours_net: Any, up_net: Any, core_cls: type, reps: int, clip: Any
) -> dict[str, Any]:
    """Warm both (3 frames, so that every network part runs once: one-off allocations, and
    our kernel measurements), then time upstream and ours alternately ``reps`` times each."""
    from xmem import DEFAULT_CONFIG, propagate

    frames, mask = clip.frames[: case.frames], clip.masks[0]
    config = dict(DEFAULT_CONFIG)

    def ours() -> Iterator[np.ndarray]:
        return propagate(ours_net, frames, mask, size=-1, precision=case.precision)

    def theirs() -> Iterator[np.ndarray]:
        return upstream_masks(core_cls, up_net, frames, mask, config, case.precision)

    row: dict[str, Any] = {
        "height": case.height,
        "width": case.width,
        "objects": case.objects,
        "precision": case.precision,
        "frames": case.frames,
        "reps": reps,
    }
    warm = time.perf_counter()
    list(propagate(ours_net, frames[:3], mask, size=-1, precision=case.precision))
    row["ours_warmup_s"] = time.perf_counter() - warm
    try:
        list(upstream_masks(core_cls, up_net, frames[:3], mask, config, case.precision))
    except Exception as exc:  # noqa: BLE001 - upstream under bf16 may not run: say so
        row["upstream_error"] = f"{type(exc).__name__}: {exc}"
    up_ms: list[float] = []
    our_ms: list[float] = []
    up_out = our_out = None
    for _ in range(reps):
        if "upstream_error" not in row:
            _, ms, up_out = per_frame(theirs())
            up_ms.append(ms)
        _, ms, our_out = per_frame(ours())
        our_ms.append(ms)
    row["ours_ms_per_frame"] = B.median(our_ms)
    row["ours_runs_ms"] = our_ms
    if up_ms:
        row["upstream_ms_per_frame"] = B.median(up_ms)
        row["upstream_runs_ms"] = up_ms
        row["ratio"] = row["upstream_ms_per_frame"] / row["ours_ms_per_frame"]
        row["agreement_pct"] = B.agreement_pct(up_out, our_out)
    print(
        f"  {case.precision} {case.height}x{case.width} {case.objects} obj "
        f"({case.frames} frames): upstream {B.fmt(row.get('upstream_ms_per_frame'))} ms, "
        f"ours {row['ours_ms_per_frame']:.1f} ms, ratio {B.fmt(row.get('ratio'), 2)}x, "
        f"agreement {B.fmt(row.get('agreement_pct'), 3)}%",
        flush=True,
    )
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    path = upstream_path(args.upstream)
    if path is None:
        raise SystemExit(HOW_TO_GET)
    if args.exclude_kernels and args.out is None:
        raise SystemExit("--exclude-kernels needs --out FILE: its rows are not the default path's")
    reference_on_path()
    from xmem.conv import excluded_kernels

    with excluded_kernels(args.exclude_kernels or ()):
        return measure(args, path)


def measure(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    """Every planned case, upstream and ours alternately (see `run_case`)."""
    plan = QUICK if args.quick else FULL
    plan = Plan(
        plan.sizes,
        plan.objects,
        tuple(args.precisions or plan.precisions),
        {k: max(3, round(n * args.frames_scale)) for k, n in plan.frames.items()},
        args.reps or plan.reps,
    )
    out = B.out_path(NAME, args.quick, args.out)
    threads = machine.use_all_cores()
    reference_on_path()
    runtime_on_path()
    import torch

    from sly_vos.dev import synthetic
    from sly_vos.memory import keep_large_blocks
    from xmem import load_network

    heap_kept = keep_large_blocks()  # the app's heap setting, for both sides

    xmem_cls, core_cls = import_upstream(path)
    weights = xmem_weights()
    ours_net = load_network(weights, device="cpu")
    up_net = upstream_network(xmem_cls, torch.load(weights, map_location="cpu", weights_only=True))
    rows = []
    clips: dict[tuple[int, int, int], Any] = {}
    done = {case_key(r) for r in earlier_rows(out)} if args.resume else set()
    for case in plan.cases():
        if case_key(case.__dict__) in done:
            print(f"  {case}: already in {out.name} (--resume)", flush=True)
            continue
        key = (case.height, case.width, case.objects)
        if key not in clips:
            clips[key] = synthetic.make_clip(
                num_frames=max(plan.frames.values()),
                height=case.height,
                width=case.width,
                ids=IDS[: case.objects],
                seed=0,
            )
        rows.append(run_case(case, ours_net, up_net, core_cls, plan.reps, clips[key]))
        rows[-1].update(
            command=B.shown_command(), date=machine.now_iso(), large_blocks_kept=heap_kept
        )
        # after every case: a run cut short still leaves its numbers
        B.write_result(out, NAME, args.quick, result(args, plan, path, threads, rows, out))
    return result(args, plan, path, threads, rows, out)


def result(
    args: argparse.Namespace, plan: Plan, path: Path, threads: int, rows: list[dict], out: Path
) -> dict[str, Any]:
    """This run's JSON; with ``--keep-other-rows`` also the rows already in ``out`` for the
    cases this run did not measure (so fp32 and bf16, or a resumed run, share one file)."""
    import torch

    from xmem.conv import kernel_choices
    from xmem.schedule import native

    if args.keep_other_rows:
        measured = {case_key(r) for r in rows}
        rows = [r for r in earlier_rows(out) if case_key(r) not in measured] + rows
        rows.sort(key=lambda r: (r["precision"] != "fp32", r["height"], r["objects"]))
    return {
        "plan": {
            "sizes": plan.sizes,
            "objects": plan.objects,
            "precisions": plan.precisions,
            "reps": plan.reps,
        },
        "upstream_path": str(path),
        "upstream_commit": upstream_commit(path),
        "cpu_model": machine.cpu_model(),
        "cpu_bf16": native(torch.bfloat16, "cpu"),
        "excluded_kernels": sorted(args.exclude_kernels or ()),
        "torch_threads": threads,
        "rows": rows,
        "kernel_choices": kernel_choices(),
    }


def case_key(row: dict[str, Any]) -> tuple:
    """What identifies a case in the results: precision, size and objects."""
    return (row["precision"], row["height"], row["width"], row["objects"])


def earlier_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of an existing results file (none when there is none)."""
    import json

    if not out.is_file():
        return []
    return list(json.loads(out.read_text(encoding="utf-8")).get("rows", []))


def upstream_commit(path: Path) -> str | None:
    """The checkout's commit, when it is a git work tree (a tarball has none)."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---------------------------------------------------------------- rendering
def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "precision",
        "frame (HxW)",
        "objects",
        "frames",
        "reps",
        "upstream ms/frame",
        "ours ms/frame",
        "upstream / ours",
        "pixel agreement %",
    ]
    rows = [
        [
            r["precision"],
            f"{r['height']}x{r['width']}",
            r["objects"],
            r["frames"],
            r["reps"],
            B.fmt(r.get("upstream_ms_per_frame"))
            if "upstream_error" not in r
            else f"failed: {r['upstream_error'][:60]}",
            r["ours_ms_per_frame"],
            B.fmt(r.get("ratio"), 2) + ("x" if "ratio" in r else ""),
            B.fmt(r.get("agreement_pct"), 3),
        ]
        for r in data["rows"]
    ]
    return headers, rows


def print_tables(data: dict[str, Any]) -> None:
    print(
        f"CPU: {data['cpu_model']} (native bf16: {data['cpu_bf16']}), "
        f"{data['torch_threads']} torch threads. {heap_line(data)}"
    )
    B.print_table(TITLE, *table_rows(data))


def why_missing(data: dict[str, Any]) -> str:
    """Why cases are missing: a stopped run, or bf16 emulated so slowly that the rest would
    take hours (said with the slowest upstream bf16 row measured)."""
    resume = "finish it with `--keep-other-rows --resume`"
    emulated = [
        r for r in data["rows"] if r["precision"] == "bf16" and "upstream_ms_per_frame" in r
    ]
    if data["cpu_bf16"] or not emulated:
        return f"the run was stopped first; {resume}"
    slowest = max(emulated, key=lambda r: r["upstream_ms_per_frame"])
    return (
        f"stopped on purpose: bf16 is emulated on this CPU and upstream took "
        f"{slowest['upstream_ms_per_frame'] / 1000:,.0f} s/frame at "
        f"{slowest['height']}x{slowest['width']} with {slowest['objects']} object(s), so the "
        f"rest would take hours; on a CPU with native bf16, {resume}"
    )


def heap_line(data: dict[str, Any]) -> str:
    """Which heap both sides ran on: the app's (`sly_vos.memory.keep_large_blocks`) or
    glibc's defaults (rows written before 2026-12-06 07:20 UTC have no such field)."""
    kept = sum(bool(r.get("large_blocks_kept")) for r in data["rows"])
    if kept == len(data["rows"]):
        return "Heap: the app's setting (large blocks reused between frames), both sides."
    if kept == 0:
        return "Heap: glibc's defaults (large blocks mapped and faulted in on every use)."
    return (
        f"Heap: the app's setting (large blocks reused between frames) in {kept} of "
        f"{len(data['rows'])} rows, glibc's defaults in the rest (see each row's JSON)."
    )


def render(data: dict[str, Any]) -> str:
    """Markdown section for RESULTS.md."""
    bf16 = (
        "native"
        if data["cpu_bf16"]
        else "not native on this CPU: PyTorch emulates it in fp32 arithmetic, so bf16 "
        "timings here say nothing about a CPU with AVX512-BF16 or AMX"
    )
    measured = {case_key(r) for r in data["rows"]}
    missing = [
        f"{p} {h}x{w} {k} obj"
        for p in FULL.precisions
        if not data["quick"]
        for (h, w) in data["plan"]["sizes"]
        for k in data["plan"]["objects"]
        if (p, h, w, k) not in measured
    ]
    choices = data.get("kernel_choices", {})
    counts: dict[str, int] = {}
    for kernel in choices.values():
        counts[kernel] = counts.get(kernel, 0) + 1
    return "\n\n".join(
        [
            f"**CPU: {data['cpu_model']}**, {data['torch_threads']} torch threads; bf16 {bf16}. "
            f"{heap_line(data)} "
            f"Upstream: `{data['upstream_path']}` at commit "
            f"`{data.get('upstream_commit') or 'unknown (not a git work tree)'}`. Load average "
            f"(1/5/15 min) when written: "
            f"{'/'.join(map(str, data.get('machine', {}).get('load_average', [])))} (above ~0.5 "
            "on these cores means other work shared them: absolute times are then pessimistic, "
            "and only the interleaved ratios compare).",
            *(
                [
                    f"**Kernels excluded from our side in this run:** "
                    f"{', '.join(data['excluded_kernels'])} (not the default path)."
                ]
                if data.get("excluded_kernels")
                else []
            ),
            B.markdown_table(*table_rows(data)),
            *(
                [f"**Not measured yet:** {', '.join(missing)} ({why_missing(data)})."]
                if missing
                else []
            ),
            "Rows may come from different runs: each row's command (and date, for rows measured "
            "since 2026-12-05 20:00) is in `results/xmem_upstream.json`.",
            "How measured: synthetic clips (`synthetic.make_clip`, seed 0, ids "
            f"{', '.join(map(str, IDS))}) made at the working size, so neither side resizes or "
            "pads; the XMem recipe weights (random, same shapes as XMem.pth) loaded strictly into "
            "both; upstream's `InferenceCore.step` in its eval.py loop (fp32, or each step under "
            "`torch.autocast('cpu', torch.bfloat16)`) against our `propagate(size=-1, "
            "precision=...)` defaults. After a 3-frame warm-up of each (ours measures its "
            "convolution kernels there), upstream and ours run alternately, "
            "*reps* times each; ms/frame = (clip time − first frame) / (frames − 1), "
            "median of the runs; ratio = upstream / ours. Fewer frames for 3 objects, 480p and "
            "bf16 keep the run in budget (nothing is skipped). Pixel agreement compares the last "
            "runs' masks; random weights make near-ties common, so bf16 agreement is low by "
            "nature and says nothing of trained-weight accuracy. Kernels chosen by measurement in "
            f"this run: {', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none'} "
            "(convolution shapes).",
        ]
    )


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exclude-kernels",
        nargs="+",
        default=None,
        metavar="KERNEL",
        help="never offer these convolution kernels to our side (e.g. nnpack "
        "nnpack_per_image: ours as on a CPU where NNPACK loses); needs --out",
    )
    parser.add_argument(
        "--upstream",
        default=None,
        help="path of an hkchengrex/XMem checkout (default: $XMEM_UPSTREAM)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=("fp32", "bf16"),
        default=None,
        help="only these precisions (default both)",
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="alternating repetitions per case (default 2)"
    )
    parser.add_argument(
        "--keep-other-rows",
        action="store_true",
        help="keep the rows of other precisions already in the results file",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the cases already in the results file (with "
        "--keep-other-rows: finish a run that was cut short)",
    )
    parser.add_argument(
        "--frames-scale",
        type=float,
        default=1.0,
        help="multiply every case's frame count (at least 3 frames each): "
        "fit a slower machine's budget without dropping a case",
    )


if __name__ == "__main__":
    sys.exit(B.main(NAME, __doc__, run, print_tables, add_args=add_args))

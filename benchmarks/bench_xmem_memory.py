"""XMem memory on long videos: peak RSS per video length, split into what the caller's frames
and masks take and what the model takes, plus XMem's memory counters.

Each length runs in a fresh process (``--child N``), so one length's allocations cannot hide
in another's peak. The longest lengths are chosen at run time: the first (shortest) length
gives the per-frame time, and when the default lengths would not fit in ``--budget-s`` the
shorter fallback lengths run instead (RESULTS.md says which and why).

Usage: ``python benchmarks/bench_xmem_memory.py [--quick] [--budget-s S] [--lengths A,B,C]``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repo_tools import bench as B
from repo_tools import machine, reference_on_path, runtime_on_path
from repo_tools.serving import xmem_weights

NAME = "xmem_memory"
TITLE = "XMem memory on a long video"
OBJECT_ID = 1
SAFETY = 1.15  # projected time margin: later frames read a larger (bounded) memory


@dataclass(frozen=True)
class Plan:
    height: int
    width: int
    lengths: tuple[int, ...]  # the first one is always run and times the rest
    fallback: tuple[int, ...]  # used instead of lengths[1:] when those do not fit


FULL = Plan(240, 427, (100, 500, 1000), (300, 600))
QUICK = Plan(64, 114, (8, 24, 48), (16, 32))  # 48 frames: one consolidation


# ---------------------------------------------------------------- child: one length


def malloc_trim() -> None:
    """Return freed heap pages to the OS so RSS shows live memory, not glibc's cache."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the peak covers only the tracking call;
    False where the kernel does not allow it (the lifetime ``ru_maxrss`` is used then)."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        return True
    except OSError:
        return False


def peak_rss(reset_worked: bool) -> int:
    """VmHWM (peak since the reset) in bytes, or the lifetime peak."""
    if reset_worked:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return machine.peak_rss_bytes()


def run_child(length: int, plan: Plan) -> dict[str, Any]:
    """Load XMem, warm up, then track ``length`` frames once and account for the memory."""
    threads = machine.use_all_cores()
    reference_on_path()
    runtime_on_path()
    from sly_vos.dev import synthetic
    from xmem import load_network, segment_video

    network = load_network(xmem_weights(), device="cpu")
    warm = synthetic.make_clip(2, plan.height, plan.width, ids=(OBJECT_ID,), seed=1)
    segment_video(network, warm.frames, warm.masks[0])
    del warm
    gc.collect()
    malloc_trim()
    baseline = machine.current_rss_bytes()

    gen_s, clip = B.timed(
        lambda: synthetic.make_clip(length, plan.height, plan.width, ids=(OBJECT_ID,), seed=0)
    )
    frames, first_mask = clip.frames, clip.masks[0]
    del clip  # ground truth is not an input of the tracker: keep it out of the numbers
    gc.collect()
    malloc_trim()
    input_bytes = sum(int(f.nbytes) for f in frames) + int(first_mask.nbytes)
    before_run = machine.current_rss_bytes()

    stats: dict[str, Any] = {}
    reset = reset_peak_rss()
    run_s, outputs = B.timed(lambda: segment_video(network, frames, first_mask, stats=stats))
    peak = peak_rss(reset)
    output_bytes = sum(int(m.nbytes) for m in outputs)
    trace = stats.get("trace", [])
    return {
        "frames": length,
        "torch_threads": threads,
        "generate_s": gen_s,
        "run_s": run_s,
        "ms_per_frame": 1000 * run_s / length,
        "baseline_rss": baseline,
        "rss_before_run": before_run,
        "peak_rss": peak,
        "peak_is_run_only": reset,
        "input_bytes": input_bytes,
        "output_bytes": output_bytes,
        "model_bytes": peak - baseline - input_bytes - output_bytes,
        "consolidations": stats.get("consolidations"),
        "work_elements": stats.get("work_elements"),
        "long_term_elements": stats.get("long_term_elements"),
        "max_work_elements": max((t[1] for t in trace), default=None),
        "max_long_term_elements": max((t[2] for t in trace), default=None),
        "working_hw": list(stats.get("working_hw", ())),
    }


# ---------------------------------------------------------------- parent: choose lengths


def spawn(length: int, quick: bool) -> tuple[dict[str, Any], float]:
    """Run one length in a fresh interpreter; returns its record and the process wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        out = Path(tmp) / "child.json"
        command = [sys.executable, __file__, "--child", str(length), "--child-out", str(out)]
        if quick:
            command.append("--quick")
        began = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - began
        record = json.loads(out.read_text(encoding="utf-8"))
    record["process_s"] = wall
    row = record
    print(
        f"  {length:>5} frames: {row['ms_per_frame']:.0f} ms/frame, peak "
        f"{B.mib(row['peak_rss']):.0f} MiB, model part {B.mib(row['model_bytes']):.0f} MiB, "
        f"long-term {row['long_term_elements']}",
        flush=True,
    )
    return record, wall


def project(first: dict[str, Any], lengths: tuple[int, ...]) -> float:
    """Seconds the given lengths would take, from the first length's per-frame time and its
    fixed process cost (start, model load, warm-up)."""
    per_frame = first["run_s"] / first["frames"]
    fixed = first["process_s"] - first["run_s"] - first["generate_s"]
    gen_per_frame = first["generate_s"] / first["frames"]
    return sum(SAFETY * n * (per_frame + gen_per_frame) + fixed for n in lengths)


def choose(plan: Plan, first: dict, budget_s: float | None, forced: bool) -> tuple[tuple, str]:
    """The lengths after the first one, and a sentence saying why."""
    wanted = plan.lengths[1:]
    need = project(first, wanted)
    if forced or budget_s is None:
        return wanted, f"lengths as requested (projected {need / 60:.1f} min)"
    if need <= budget_s:
        return wanted, (
            f"default lengths: projected {need / 60:.1f} min fit in the "
            f"{budget_s / 60:.1f} min left of the run's budget"
        )
    smaller = project(first, plan.fallback)
    verdict = "fit" if smaller <= budget_s else "still exceed it, run anyway"
    return plan.fallback, (
        f"{'/'.join(map(str, wanted))} frames would take about {need / 60:.1f} min "
        f"({first['ms_per_frame']:.0f} ms/frame measured at {first['frames']} frames) but only "
        f"{budget_s / 60:.1f} min of the run's budget were left, so "
        f"{'/'.join(map(str, plan.fallback))} frames ran instead (projected "
        f"{smaller / 60:.1f} min: {verdict})"
    )


def run(plan: Plan, quick: bool, budget_s: float | None, forced: bool) -> dict[str, Any]:
    began = time.perf_counter()
    xmem_weights()  # written once, outside the measured children
    first, _ = spawn(plan.lengths[0], quick)
    left = None if budget_s is None else budget_s - (time.perf_counter() - began)
    rest, reason = choose(plan, first, left, forced)
    rows = [first] + [spawn(n, quick)[0] for n in rest]
    return {
        "plan": plan.__dict__,
        "lengths_run": [r["frames"] for r in rows],
        "lengths_reason": reason,
        "budget_s": budget_s,
        "torch_threads": first["torch_threads"],
        "rows": rows,
    }


# ---------------------------------------------------------------- rendering


def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "frames",
        "ms/frame",
        "baseline MiB",
        "peak MiB",
        "input frames MiB",
        "output masks MiB",
        "model part MiB",
        "working mem elements",
        "long-term elements",
        "consolidations",
    ]
    rows = [
        [
            r["frames"],
            r["ms_per_frame"],
            B.mib(r["baseline_rss"]),
            B.mib(r["peak_rss"]),
            B.mib(r["input_bytes"]),
            B.mib(r["output_bytes"]),
            B.mib(r["model_bytes"]),
            r["work_elements"],
            r["long_term_elements"],
            r["consolidations"],
        ]
        for r in data["rows"]
    ]
    return headers, rows


def growth_line(data: dict[str, Any]) -> str:
    """Model-part growth per frame between the shortest and the longest video."""
    rows = data["rows"]
    if len(rows) < 2:
        return ""
    a, b = rows[0], rows[-1]
    per_frame = (b["model_bytes"] - a["model_bytes"]) / (b["frames"] - a["frames"])
    caller = (b["input_bytes"] + b["output_bytes"]) / b["frames"]
    return (
        f"From {a['frames']} to {b['frames']} frames the model part changes by "
        f"{per_frame / 1024:+.1f} KiB per frame, while the caller's frames and masks take "
        f"{caller / 1024:.0f} KiB per frame."
    )


def print_tables(data: dict[str, Any]) -> None:
    B.print_table(TITLE, *table_rows(data))
    print(f"lengths: {data['lengths_reason']}")
    print(growth_line(data))


def render(data: dict[str, Any]) -> str:
    plan = data["plan"]
    peak_kind = (
        "peak of the tracking call alone (VmHWM reset just before it)"
        if all(r["peak_is_run_only"] for r in data["rows"])
        else "lifetime peak (`ru_maxrss`)"
    )
    return "\n\n".join(
        [
            B.markdown_table(*table_rows(data)),
            growth_line(data),
            f"**Lengths:** {data['lengths_reason']}.",
            f"How measured: one fresh process per length (CPU, torch threads = "
            f"{data['torch_threads']}). Each loads XMem (recipe weights, same size as XMem.pth), "
            f"warms up on 2 frames, then takes *baseline* = RSS after `malloc_trim`; it renders "
            f"a {plan['height']}x{plan['width']} synthetic clip with 1 object (ground truth "
            f"dropped), "
            f"and times one `segment_video(frames, mask)` call with XMem's default memory settings "
            f"(memory frame every 5, 5-10 mid-term frames, 128 prototypes per consolidation, "
            f"long-term cap 10000 elements). *peak* is the {peak_kind}. *input frames* and "
            f"*output masks* are the bytes of the caller's RGB frames and the returned uint8 "
            f"masks, which grow with the video whatever the model does; *model part* = peak − "
            f"baseline − input − output is what the model holds on top (features, working and "
            f"long-term memory, allocator slack). Element counts are XMem's memory sizes at the "
            "end of the video (`stats` of `segment_video`): working memory is capped at 10 memory "
            "frames, older ones are consolidated into long-term prototypes (capped at 10000 "
            "elements). Bounded memory shows as a model part that stays flat while the input and "
            "output columns grow with the video.",
        ]
    )


def add_args(parser: argparse.ArgumentParser) -> None:
    B.add_budget_arg(parser, "picks the lengths")
    parser.add_argument("--lengths", default=None, help="comma-separated, e.g. 100,500,1000")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    parser = B.parser_for(__doc__, add_args)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.child is not None:  # one length, in a fresh process: no result file of its own
        record = run_child(args.child, plan)
        args.child_out.write_text(json.dumps(record), encoding="utf-8")
        return 0
    forced = args.lengths is not None
    if forced:
        lengths = tuple(int(x) for x in args.lengths.split(",") if x.strip())
        if not lengths or min(lengths) < 2:
            parser.error("--lengths: give comma-separated frame counts >= 2")
        plan = Plan(plan.height, plan.width, lengths, lengths[1:])
    B.record(NAME, args, run(plan, args.quick, args.budget_s, forced), print_tables)
    return 0


if __name__ == "__main__":
    sys.exit(main())

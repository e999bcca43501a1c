"""Run every benchmark, each in its own process, and write ``benchmarks/RESULTS.md``.

A fresh process per benchmark keeps their memory (RSS) and thread pools apart. Each writes
its raw numbers to ``benchmarks/results/<name>.json``; this script renders every table
from those files, so ``--only NAME`` refreshes one table and keeps the others.

Usage (``make bench`` runs the first)::

    .venv/bin/python benchmarks/run_all.py
    .venv/bin/python benchmarks/run_all.py --quick            # tiny sizes: smoke test
    .venv/bin/python benchmarks/run_all.py --only serving     # one benchmark

The XMem memory benchmark runs last and picks its video lengths from what is left of
``--budget-min`` (default 45), and the tracker benchmark drops its optional 3-object
batched-vs-plain comparison when it would overrun its share, so the whole run stays near the
budget on a slower machine (the configurations themselves are never cut).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from repo_tools import BENCH_DIR, REPO_ROOT, machine, repo_relative
from repo_tools import bench as B

# Order of the sections in RESULTS.md.
SECTIONS = {
    "tracker": ("bench_tracker", "1. Tracker throughput"),
    "xmem_memory": ("bench_xmem_memory", "2. XMem memory on a long video"),
    "serving": ("bench_serving", "3. Serving overhead"),
    "protocol": ("bench_protocol", "4. Labeling-tool protocol: memory of a long request"),
    "template": ("bench_template", "5. Template: bake and install"),
    "container": ("bench_container", "6. Docker images of the generated apps"),
    "xmem_upstream": ("bench_xmem_upstream", "7. XMem vs upstream XMem on CPU"),
    "sam2": ("bench_sam2", "8. SAM 2.1 on the CPU (reference_sam2)"),
    "cuda": ("bench_cuda", "9. On a GPU: XMem and SAM 2.1 tiny, fp32 vs fp16"),
}
# Order of the runs: the memory benchmark adapts its lengths to the budget left, so it is last.
RUN_ORDER = (
    "tracker",
    "serving",
    "protocol",
    "template",
    "container",
    "xmem_upstream",
    "sam2",
    "cuda",
    "xmem_memory",
)
# Benchmarks that need something the repository does not ship: the environment variable
# that points to it, and how to get it. Without it they are skipped (their section says so).
NEEDS_ENV = {
    "xmem_upstream": (
        "XMEM_UPSTREAM",
        "git clone https://github.com/hkchengrex/XMem PATH, then XMEM_UPSTREAM=PATH",
    )
}
# Benchmarks that need a GPU: skipped (their section says so) where torch sees none.
NEEDS_CUDA = frozenset({"cuda"})
# Budget of the benchmarks that adapt: a share of the whole budget for the tracker (only its
# optional 3-object comparison can be cut), whatever is left for the memory benchmark.
BUDGET_SHARE = {"tracker": 0.4}
LEFTOVER_BUDGET = "xmem_memory"
MIN_BUDGET_S = 60.0
# Results merged across runs rather than rewritten: the container tests keep the last cold
# build and the engine/base-image set-up there, which a warm run does not repeat.
ACCUMULATED = frozenset({"container"})


def budget_for(name: str, total_s: float, left_s: float) -> float | None:
    """Seconds ``name`` may take, or None for the benchmarks with fixed work."""
    if name in BUDGET_SHARE:
        return min(left_s, BUDGET_SHARE[name] * total_s)
    if name == LEFTOVER_BUDGET:
        return left_s
    return None


def cuda_available() -> bool:
    """Whether torch sees a GPU, asked in a child process (this script imports no torch)."""
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def run_one(name: str, quick: bool, budget_s: float | None) -> dict[str, Any]:
    """Run one benchmark script in a fresh interpreter; its output goes to the console."""
    module, title = SECTIONS[name]
    out = B.results_dir(quick) / f"{name}.json"
    if name not in ACCUMULATED:
        out.unlink(missing_ok=True)  # a failed run must not leave an older table looking current
    command = [sys.executable, str(BENCH_DIR / f"{module}.py"), "--out", str(out)]
    if quick:
        command.append("--quick")
    if budget_s is not None:
        command += ["--budget-s", f"{max(MIN_BUDGET_S, budget_s):.0f}"]
    print(
        f"\n=== {title} ({' '.join(Path(c).name if '/' in c else c for c in command)})", flush=True
    )
    began = time.perf_counter()
    code = subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
    wall = time.perf_counter() - began
    print(f"=== {name}: exit code {code}, {wall / 60:.1f} min", flush=True)
    return {"exit_code": code, "wall_s": wall}


def header(args: argparse.Namespace, status: dict, load_before: list, began: float) -> str:
    """Machine, versions, date and command of this run, and how long each part took."""
    info, versions = machine.machine_info(), machine.versions()
    command = (
        "make bench  # = .venv/bin/python benchmarks/run_all.py"
        if not args.argv
        else (".venv/bin/python benchmarks/run_all.py " + " ".join(args.argv))
    )
    lines = [
        "# Benchmarks"
        + (" (quick smoke run: tiny sizes, numbers mean nothing)" if args.quick else ""),
        "",
        f"- **Date:** {machine.now_iso()}",
        f"- **Command:** `{command}`",
        f"- **Machine:** {info['cpu_model']}, {info['cores']} cores, "
        f"{info['ram_gib']} GiB RAM, {info['platform']}",
        "- **Versions:** " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- **Load average** (1/5/15 min) before: {'/'.join(map(str, load_before))}, after: "
        f"{'/'.join(map(str, info['load_average']))} (above ~0.5 means other work shared "
        "the cores and the timings are pessimistic)",
        f"- **Wall time of this run:** {(time.perf_counter() - began) / 60:.1f} min",
    ]
    if status:
        lines += [
            "",
            B.markdown_table(
                ["benchmark", "exit code", "minutes"],
                [[name, s["exit_code"], B.fmt(s["wall_s"] / 60, 1)] for name, s in status.items()],
            ),
        ]
    return "\n".join(lines)


def section(name: str, quick: bool, status: dict) -> str:
    """One benchmark's table and notes, rendered by its own module from its JSON."""
    module_name, title = SECTIONS[name]
    data = B.load_result(name, quick)
    lines = [f"## {title}"]
    if name in status and status[name]["exit_code"] != 0:
        lines.append(
            f"**FAILED** (exit code {status[name]['exit_code']}); see the console "
            "output of the run."
        )
    if data is None:
        where = " on a machine with a CUDA GPU" if name in NEEDS_CUDA else ""
        lines.append(
            f"Not measured yet: run `.venv/bin/python benchmarks/run_all.py --only {name}`{where}."
        )
        return "\n\n".join(lines)
    date, command = data.get("date", "unknown date"), data.get("command", "?")
    if name not in status:
        lines.append(f"*From an earlier run ({date}).*")
    module = importlib.import_module(module_name)
    lines.append(f"*Measured {date}: `{command}`*")
    lines.append(module.render(data))
    return "\n\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes; writes results-quick/ and RESULTS-quick.md",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(SECTIONS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: re-render RESULTS.md from results/*.json",
    )
    parser.add_argument(
        "--budget-min",
        type=float,
        default=45.0,
        help="minutes the whole run may take (the memory benchmark adapts)",
    )
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    began = time.perf_counter()
    load_before = machine.load_average()
    chosen = [name for name in RUN_ORDER if not args.only or name in args.only]
    for name, (variable, how) in NEEDS_ENV.items():
        if name in chosen and not os.environ.get(variable):
            print(f"skipping {name}: ${variable} is not set ({how})", flush=True)
            chosen.remove(name)
    if not args.render_only and NEEDS_CUDA & set(chosen) and not cuda_available():
        print(f"skipping {', '.join(sorted(NEEDS_CUDA))}: torch sees no CUDA device", flush=True)
        chosen = [name for name in chosen if name not in NEEDS_CUDA]
    if args.render_only:
        chosen = []
    status: dict[str, dict[str, Any]] = {}
    total = args.budget_min * 60
    for name in chosen:
        left = total - (time.perf_counter() - began)
        status[name] = run_one(name, args.quick, budget_for(name, total, left))
    parts = [header(args, status, load_before, began)]
    parts += [section(name, args.quick, status) for name in SECTIONS]
    target = B.markdown_path(args.quick)
    target.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    print(f"\nwrote {repo_relative(target)}")
    failed = [name for name, s in status.items() if s["exit_code"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

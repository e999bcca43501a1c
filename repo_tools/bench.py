"""What every benchmark script shares: its ``main`` (``--quick``, ``--out``, the results
JSON with the machine and versions it came from), timing, and table rendering.

A benchmark module defines ``NAME``, ``run(args) -> dict``, ``print_tables(data)`` and
``render(data) -> str`` (its section of ``benchmarks/RESULTS.md``, used by ``run_all.py``),
and ends with ``sys.exit(bench.main(NAME, __doc__, run, print_tables))``. Each runs in its
own process; ``run_all.py`` imports the modules only to render their JSON, so module level
code stays cheap (heavy imports inside functions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import BENCH_DIR, repo_relative
from .machine import machine_info, now_iso, versions

# ---------------------------------------------------------------- where results go


def results_dir(quick: bool) -> Path:
    """Where JSON results go: quick runs never overwrite the real numbers."""
    return BENCH_DIR / ("results-quick" if quick else "results")


def markdown_path(quick: bool) -> Path:
    return BENCH_DIR / ("RESULTS-quick.md" if quick else "RESULTS.md")


def out_path(name: str, quick: bool, given: Path | None = None) -> Path:
    return given if given is not None else results_dir(quick) / f"{name}.json"


def shown_command() -> str:
    """This process's command line, with repository paths made relative."""
    return " ".join(repo_relative(part) for part in [sys.executable, *sys.argv])


def write_result(path: Path, name: str, quick: bool, data: dict[str, Any]) -> None:
    """Write one benchmark's raw numbers with the machine and versions they came from
    (atomically: a reader never sees half a file)."""
    record = {
        "name": name,
        "quick": quick,
        "date": now_iso(),
        "command": shown_command(),
        "machine": machine_info(),
        "versions": versions(),
        **data,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_result(name: str, quick: bool) -> dict[str, Any] | None:
    path = results_dir(quick) / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- main


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--quick`` and ``--out`` for every benchmark script."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")


def add_budget_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--budget-s`` of the benchmarks that adapt to the time ``run_all.py`` gives them."""
    parser.add_argument(
        "--budget-s", type=float, default=None, help=f"seconds this benchmark may take ({what})"
    )


def parser_for(
    doc: str | None, add_args: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.ArgumentParser:
    """The argument parser of a benchmark: its docstring's first line, the common
    arguments, then its own."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    add_common_args(parser)
    if add_args is not None:
        add_args(parser)
    return parser


def record(
    name: str,
    args: argparse.Namespace,
    data: dict[str, Any],
    print_tables: Callable[[dict[str, Any]], None],
) -> Path:
    """Print the tables, write the JSON (``--out`` or ``results[-quick]/<name>.json``)."""
    print_tables(data)
    path = out_path(name, args.quick, args.out)
    write_result(path, name, args.quick, data)
    print(f"wrote {repo_relative(path)}", flush=True)
    return path


def main(
    name: str,
    doc: str | None,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    print_tables: Callable[[dict[str, Any]], None],
    *,
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse the arguments, ``run(args)``, print and record the numbers; the exit code."""
    args = parser_for(doc, add_args).parse_args(argv)
    record(name, args, run(args), print_tables)
    return 0


# ---------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call, on the monotonic high-resolution clock."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def agreement_pct(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Percent of pixels two runs' masks share, over the frames after the annotated one
    (frame 0 is the input mask in both)."""
    import numpy as np

    same = sum(int(np.count_nonzero(x == y)) for x, y in zip(a[1:], b[1:], strict=True))
    total = sum(int(x.size) for x in a[1:])
    return 100.0 * same / total if total else 100.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mib(value: float | int | None) -> float | None:
    return None if value is None else float(value) / 2**20


# ---------------------------------------------------------------- tables


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: floats rounded, None as an em dash, booleans as yes / no."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are already strings or go through ``fmt``."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain aligned table for the console (first column left, the rest right)."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    sys.stdout.flush()


__all__ = [
    "add_budget_arg",
    "add_common_args",
    "fmt",
    "load_result",
    "main",
    "markdown_path",
    "markdown_table",
    "median",
    "mib",
    "out_path",
    "parser_for",
    "print_table",
    "record",
    "results_dir",
    "shown_command",
    "timed",
    "write_result",
]

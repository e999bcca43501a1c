"""Helpers shared by the benchmark scripts: paths, baking, imports by path, machine facts,
timing and table rendering.

Every benchmark runs in its own process (``run_all.py`` starts them), so this module keeps
heavy imports (torch, cv2, supervisely) inside functions: ``run_all.py`` imports the
benchmark modules only to render their JSON, and that must stay cheap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "benchmarks"
CACHE_DIR = BENCH_DIR / ".cache"
TEMPLATE_APP_DIR = REPO / "{{cookiecutter.app_slug}}"
REFERENCE_DIR = REPO / "reference_xmem"
XMEM_SRC = REFERENCE_DIR / "src"
XMEM_WEIGHTS = CACHE_DIR / "xmem-recipe-v1.pth"
BAKED_PACKAGE = "serve_myvos"  # package of the app baked with the default answers


def results_dir(quick: bool) -> Path:
    """Where JSON results go: quick runs never overwrite the real numbers."""
    return BENCH_DIR / ("results-quick" if quick else "results")


def markdown_path(quick: bool) -> Path:
    return BENCH_DIR / ("RESULTS-quick.md" if quick else "RESULTS.md")


# ---------------------------------------------------------------- threads and machine


def cpu_count() -> int:
    """Cores this process may run on (affinity-aware, unlike ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_all_cores() -> int:
    """Give torch every core (its default is the physical cores) and return the count, so
    every benchmark states the same thread setting."""
    import torch

    threads = cpu_count()
    torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def cpu_model() -> str:
    """The CPU model line of ``/proc/cpuinfo`` (falls back to ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def package_version(*names: str) -> str:
    """Installed version of the first distribution found among ``names`` (no import)."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def machine_info() -> dict[str, Any]:
    """Facts a reader needs to compare numbers across machines, without importing torch."""
    return {
        "cpu_model": cpu_model(),
        "cores": cpu_count(),
        "ram_gib": round(total_ram_bytes() / 2**30, 1),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "numpy": package_version("numpy"),
        "opencv": package_version(
            "opencv-python", "opencv-python-headless", "opencv-contrib-python"
        ),
        "supervisely": package_version("supervisely"),
        "cookiecutter": package_version("cookiecutter"),
    }


def cuda_device_name() -> str | None:
    """Name of CUDA device 0, or None when torch sees no usable GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call, on the monotonic high-resolution clock."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


# ---------------------------------------------------------------- importing and baking


def import_by_path(name: str, path: Path) -> ModuleType:
    """Import one file as module ``name`` (registered first, as dataclasses require)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {name} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def server_helper(app_root: Path) -> ModuleType:
    """A baked app's ``tests/_server.py`` (real uvicorn server, and the request encoding of
    the package's ``client`` module), reused so the benchmark talks to the app exactly as
    its own tests do. Rendered by the bake, so it is imported from a baked app (whose
    ``src`` ``import_baked`` has put on ``sys.path``)."""
    return import_by_path("_bench_server_helper", app_root / "tests" / "_server.py")


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence fd 1 (the post-gen hook prints next steps from a subprocess)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def bake_app(output_dir: Path, **answers: Any) -> Path:
    """Bake the template with the cookiecutter API (default answers unless given)."""
    from cookiecutter.main import cookiecutter

    with quiet_stdout():
        path = cookiecutter(
            str(REPO), no_input=True, output_dir=str(output_dir), extra_context=answers or None
        )
    return Path(path)


def import_baked(app_root: Path, package: str = BAKED_PACKAGE) -> ModuleType:
    """Put a baked app's ``src`` on ``sys.path`` and import its package: the template's
    copied modules import ``settings`` relatively, so they only load inside a package."""
    src = str(app_root / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    return importlib.import_module(package)


def xmem_on_path() -> None:
    """Make the reference app's ``xmem`` and ``serve_xmem`` packages importable."""
    if str(XMEM_SRC) not in sys.path:
        sys.path.insert(0, str(XMEM_SRC))


def xmem_weights() -> Path:
    """Recipe weights (deterministic, ~249 MB), written once to the git-ignored cache.

    Random-but-fixed weights cost exactly what the real XMem.pth costs (same shapes), and
    need no download; the file is written atomically so a concurrent run never reads half.
    """
    if XMEM_WEIGHTS.is_file():
        return XMEM_WEIGHTS
    xmem_on_path()
    from xmem.recipe import write_recipe_weights

    partial = XMEM_WEIGHTS.with_name(XMEM_WEIGHTS.name + f".{os.getpid()}.partial")
    write_recipe_weights(partial)
    partial.replace(XMEM_WEIGHTS)
    return XMEM_WEIGHTS


def server_env(app_data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a served app: placeholder credentials, no instance is contacted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    env.update(
        SLY_APP_DATA_DIR=str(app_data_dir),
        SERVER_ADDRESS="http://127.0.0.1:9",
        API_TOKEN="placeholder-token-for-benchmarks",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra)
    return env


# ---------------------------------------------------------------- results


def repo_relative(text: str) -> str:
    """A path inside the repository as the relative path a reader can type; else as is."""
    path = Path(text)
    if not path.is_absolute():
        return text
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return text


def shown_command() -> str:
    """This process's command line, with repository paths made relative."""
    return " ".join(repo_relative(part) for part in [sys.executable, *sys.argv])


def write_result(path: Path, name: str, quick: bool, data: dict[str, Any]) -> None:
    """Write one benchmark's raw numbers with the machine and versions they came from."""
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


def add_common_args(parser: Any) -> None:
    """``--quick`` and ``--out`` for every benchmark script."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")


def out_path(name: str, quick: bool, given: Path | None) -> Path:
    return given if given is not None else results_dir(quick) / f"{name}.json"


# ---------------------------------------------------------------- tables


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: floats rounded, None as an em dash."""
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
    """Print a plain aligned table for the console."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:  # first column (a name) left, numbers right
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    sys.stdout.flush()


def mib(value: float | int | None) -> float | None:
    return None if value is None else float(value) / 2**20

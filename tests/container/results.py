"""Timings and sizes merged into ``benchmarks/results/container.json``."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import REPO_ROOT, image_size
from .images import BuildResult

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "container.json"


def record(section: str, name: str, values: Mapping[str, Any], path: Path = RESULTS_PATH) -> None:
    """Merge ``values`` into ``path`` under ``section``/``name`` (other entries are kept)."""
    data: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(json.JSONDecodeError):
            data = json.loads(path.read_text("utf-8"))
    data["name"] = "container"
    data["command"] = ".venv/bin/python -m pytest tests/test_container.py"
    data["machine"] = {"cores": os.cpu_count(), "platform": platform.platform()}
    entry = data.setdefault(section, {}).setdefault(name, {})
    entry.update(values)
    entry["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", "utf-8")
    tmp.replace(path)


def build_record(build: BuildResult) -> dict[str, Any]:
    """The numbers of a build worth keeping: time, cache use, size and slow steps."""
    size = image_size(build.tag) if build.returncode == 0 else None
    return {
        "build_s": round(build.seconds, 2),
        "cached_steps": build.cached_steps,
        "steps": len(build.steps),
        "size_bytes": size,
        "size_gb": round(size / 1e9, 3) if size else None,
        "slow_steps": [
            {"step": step["step"], "s": step["s"]} for step in build.steps if step["s"] >= 2.0
        ],
    }

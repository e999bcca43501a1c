"""Docker images of the generated apps: build time, size, time to ``/is_ready``.

The numbers are written by the container tests themselves (``tests/test_container.py``
records every build and start in ``benchmarks/results/container.json``); this script runs
that test module and renders the table. A build served from the layer cache takes a fraction
of a second, so the table keeps the last cold build (``cold_build``) beside it.

    .venv/bin/python benchmarks/bench_container.py [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from repo_tools import REPO_ROOT, machine
from repo_tools import bench as B

RESULTS = REPO_ROOT / "benchmarks" / "results" / "container.json"
IMAGES = (
    ("default-bake", "default bake (optical flow)"),
    ("reference-xmem", "reference_xmem (XMem, recipe weights baked in)"),
    ("no-libmagic", "default bake without libmagic1 (must never be ready)"),
    ("reference-xmem-wrong-checksum", "reference_xmem, wrong WEIGHTS_SHA256 (must fail)"),
)


def render(data: dict[str, Any]) -> str:
    """The images table and the set-up steps of the engine and the local base image."""
    rows = []
    for key, title in IMAGES:
        image = data.get("images", {}).get(key)
        if not image:
            continue
        cold, last = image.get("cold_build", {}), image.get("last_build", {})
        rows.append(
            [
                title,
                B.fmt(cold.get("build_s")),
                B.fmt(last.get("build_s"), 2),
                B.fmt(cold.get("size_gb") or last.get("size_gb"), 2),
                B.fmt(image.get("ready_s")),
                B.fmt(image.get("mean_j"), 3) if "mean_j" in image else "—",
                B.fmt(image.get("track_async_mean_j"), 3) if "track_async_mean_j" in image else "—",
            ]
        )
    table = B.markdown_table(
        [
            "image",
            "cold build s",
            "cached build s",
            "size GB",
            "docker run to /is_ready s",
            "/track-api-files mean J",
            "/track_async mean J",
        ],
        rows,
    )
    setup = data.get("setup", {})
    engine, base = setup.get("engine", {}), setup.get("base_image", {})
    notes = [
        f"Engine: Debian's docker.io installed in {B.fmt(engine.get('install_s'))} s, dockerd "
        f"ready in {B.fmt(engine.get('start_s'), 2)} s. Local base image "
        f"`{base.get('tag', '?')}`: debootstrap {B.fmt(base.get('debootstrap_s'))} s, import "
        f"{B.fmt(base.get('import_s'))} s, Python layer {B.fmt(base.get('python_layer_s'))} s, "
        f"{B.fmt((base.get('size_bytes') or 0) / 1e6, 0)} MB. The CUDA base cannot be pulled "
        "here: the images are built on that Debian base with the CPU torch wheel from a "
        "loopback index (build args only; the Dockerfiles are unchanged).",
    ]
    return table + "\n\n" + "\n".join(notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="same as a full run (no sizes)")
    parser.add_argument("--budget-s", type=float, default=None, help="ignored")
    args = parser.parse_args(argv)
    code = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_container.py", "-q", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT, env={**os.environ, "CI": os.environ.get("CI", "")}, check=False,
    ).returncode  # fmt: skip
    data = json.loads(RESULTS.read_text("utf-8"))
    data.setdefault("date", machine.now_iso())
    data.setdefault("command", ".venv/bin/python benchmarks/bench_container.py")
    if args.out != RESULTS:
        args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        RESULTS.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(render(data))
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Template costs: how long baking an app takes (cookiecutter API and CLI), and how long a
new user waits from bake to a green test run (venv, pinned torch, requirements, pytest).

Usage: ``python benchmarks/bench_template.py [--quick] [--out FILE]``. ``--quick`` bakes
twice per way and runs only one small test file of the app after the real install.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repo_tools import REPO_ROOT
from repo_tools import bench as B
from repo_tools.baking import TEMPLATE_ANSWERS, bake

NAME = "template"
TITLE = "Template: bake, and bake + venv + install + tests"
# The README's first install step, with the template's default torch answer.
TORCH_PIN = "torch==" + TEMPLATE_ANSWERS["torch_version"]


@dataclass(frozen=True)
class Plan:
    bake_reps: int
    pytest_args: tuple[str, ...]


FULL = Plan(5, ("-q",))
QUICK = Plan(2, ("-q", "-k", "test_manifest"))  # the manifest suite of the runtime


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing of this venv or of a pytest run leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_step(command: list[str], cwd: Path, timeout: int) -> tuple[float, str, int]:
    """(seconds, output tail, exit code) of one command."""
    began = time.perf_counter()
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        check=False,
    )
    seconds = time.perf_counter() - began
    return seconds, (result.stdout + result.stderr)[-3000:], result.returncode


def bake_api_times(reps: int, tmp: Path) -> list[float]:
    """In-process ``cookiecutter()`` calls, each into a fresh folder (hooks included)."""
    times = []
    for index in range(reps):
        seconds, _ = B.timed(lambda i=index: bake(tmp / f"api-{i}"))
        times.append(seconds)
    return times


def bake_cli_times(reps: int, tmp: Path) -> list[float]:
    """``cookiecutter . --no-input`` as a user types it (interpreter start-up included)."""
    cli = Path(sys.executable).parent / "cookiecutter"
    times = []
    for index in range(reps):
        command = [str(cli), str(REPO_ROOT), "--no-input", "-o", str(tmp / f"cli-{index}")]
        seconds, output, code = run_step(command, tmp, 300)
        if code != 0:
            raise RuntimeError(f"cookiecutter CLI failed ({code}):\n{output}")
        times.append(seconds)
    return times


def pytest_summary(output: str) -> str:
    """The last line of ``pytest -q`` (e.g. ``42 passed, 1 xfailed in 95.0s``)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def bake_install_test(plan: Plan, tmp: Path) -> dict[str, Any]:
    """Bake, create a venv, install the pinned torch then the dev requirements, run the
    app's tests: each step timed, the first failing step stops the chain."""
    steps: dict[str, float] = {}
    steps["bake"], baked = B.timed(lambda: bake(tmp / "full"))
    app = baked.root
    venv = tmp / "venv"
    python = str(venv / "bin" / "python")
    chain = [
        ("venv", [sys.executable, "-m", "venv", str(venv)], 300),
        ("pip install torch", [python, "-m", "pip", "install", "-q", TORCH_PIN], 1800),
        (
            "pip install -r requirements-dev.txt",
            [python, "-m", "pip", "install", "-q", "-r", "requirements-dev.txt"],
            1800,
        ),
        ("pytest", [python, "-m", "pytest", *plan.pytest_args, "-p", "no:cacheprovider"], 2400),
    ]
    summary, passed = "", False
    for label, command, timeout in chain:
        seconds, output, code = run_step(command, app, timeout)
        steps[label] = seconds
        print(f"  {label}: {seconds:.1f} s", flush=True)
        if label == "pytest":
            summary = pytest_summary(output)
            passed = code == 0 and " passed" in summary and " failed" not in summary
        elif code != 0:
            raise RuntimeError(f"{label} failed ({code}):\n{output}")
    return {
        "steps": steps,
        "total_s": sum(steps.values()),
        "pytest_summary": summary,
        "tests_passed": passed,
        "pytest_args": list(plan.pytest_args),
    }


def pip_sources() -> list[str]:
    """Where pip takes wheels from on this machine (so 'cache warm' can be qualified):
    ``key=value`` of the index and find-links settings, each once."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    sources: list[str] = []
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        item = f"{name}={value.strip().strip(chr(39))}"
        if name in ("index-url", "extra-index-url", "find-links") and item not in sources:
            sources.append(item)
    return sources


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-template-") as tmp_name:
        tmp = Path(tmp_name)
        api = bake_api_times(plan.bake_reps, tmp)
        cli = bake_cli_times(plan.bake_reps, tmp)
        print(
            f"  bake: API median {B.median(api):.2f} s, CLI median {B.median(cli):.2f} s",
            flush=True,
        )
        full = bake_install_test(plan, tmp)
    return {
        "bake_api_s": api,
        "bake_cli_s": cli,
        "install": full,
        "pip_sources": pip_sources(),
        "torch_pin": TORCH_PIN,
    }


# ---------------------------------------------------------------- rendering


def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["what", "seconds", "notes"]
    api, cli = data["bake_api_s"], data["bake_cli_s"]
    rows: list[list[Any]] = [
        [
            "bake, cookiecutter API",
            B.fmt(B.median(api), 2),
            f"median of {len(api)} (min {min(api):.2f}, max {max(api):.2f})",
        ],
        [
            "bake, cookiecutter CLI",
            B.fmt(B.median(cli), 2),
            f"median of {len(cli)} (min {min(cli):.2f}, max {max(cli):.2f}), incl. start-up",
        ],
    ]
    install = data["install"]
    for label, seconds in install["steps"].items():
        note = ""
        if label == "pytest":
            note = f"`pytest {' '.join(install['pytest_args'])}`: {install['pytest_summary']}"
        rows.append([f"&nbsp;&nbsp;{label}", B.fmt(seconds, 1), note])
    verdict = "tests passed" if install["tests_passed"] else "TESTS DID NOT PASS"
    rows.append(["**bake + venv + install + tests**", f"**{install['total_s']:.1f}**", verdict])
    return headers, rows


def print_tables(data: dict[str, Any]) -> None:
    headers, rows = table_rows(data)
    plain = [
        [str(c).replace("&nbsp;", " ").replace("**", "").replace("`", "") for c in row]
        for row in rows
    ]
    B.print_table(TITLE, headers, plain)


def render(data: dict[str, Any]) -> str:
    sources = "; ".join(f"`{s}`" for s in data["pip_sources"]) or "pip's defaults"
    return "\n\n".join(
        [
            B.markdown_table(*table_rows(data)),
            "How measured: the template is baked with the default answers, in-process with "
            "`cookiecutter.main.cookiecutter(no_input=True)` and as the `cookiecutter . "
            "--no-input` command, each into a fresh folder (hooks included). The chain below is "
            "run once, as the README tells a new user: bake, `python -m venv`, "
            f"`pip install {data['torch_pin']}`, `pip install -r requirements-dev.txt`, "
            "`python -m pytest` in the app, each step timed. The pip cache was warm: every "
            "package had been installed on this machine before (by `scripts/setup.sh`) and pip "
            f"read wheels from local sources ({sources}), so the install times are resolving, "
            "unpacking and linking, not downloads; a first install over the network takes longer.",
        ]
    )


if __name__ == "__main__":
    sys.exit(B.main(NAME, __doc__, run, print_tables))

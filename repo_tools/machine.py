"""Facts about this machine that a reader needs to compare numbers: CPU, cores, RAM, load,
package versions, and this process's memory. Nothing here imports torch unless asked."""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


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

    torch.set_num_threads(cpu_count())
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


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def package_version(*names: str) -> str:
    """Installed version of the first distribution found among ``names`` (no import)."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, platform and load average (no torch import)."""
    return {
        "cpu_model": cpu_model(),
        "cores": cpu_count(),
        "ram_gib": round(total_ram_bytes() / 2**30, 1),
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def machine_line() -> str:
    """``machine_info`` as one line of prose."""
    info = machine_info()
    return (
        f"{info['cpu_model']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
        f"{info['platform']}, Python {platform.python_version()}"
    )


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


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (this process by default)."""
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


__all__ = [
    "cpu_count",
    "cpu_model",
    "cuda_device_name",
    "current_rss_bytes",
    "load_average",
    "machine_info",
    "machine_line",
    "now_iso",
    "package_version",
    "peak_rss_bytes",
    "total_ram_bytes",
    "use_all_cores",
    "versions",
]

"""The process's heap settings (`sly_vos.memory`), observed as a user of the process would:
page faults per large block and resident memory, each case in a fresh interpreter (the
settings are process-wide and cannot be undone inside pytest's own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sly_vos import memory

glibc_only = pytest.mark.skipif(
    memory._LIBC is None or not sys.platform.startswith("linux"),
    reason="the heap settings are glibc's (Linux)",
)

BLOCK_MB = 96  # over glibc's largest automatic mmap threshold (32 MB)

PROBE = textwrap.dedent(
    f"""
    import json, resource, sys
    from sly_vos import memory

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def one_block() -> int:
        # one frame's worth of a large buffer: allocated, every page written, freed
        before = faults()
        block = bytearray({BLOCK_MB} << 20)
        block[::4096] = b"x" * len(block[::4096])
        del block
        return faults() - before

    kept = memory.keep_large_blocks() if sys.argv[1] == "keep" else False
    resting = rss()
    one_block()
    after_free = rss()
    second = one_block()
    memory.release_memory()
    print(json.dumps(dict(kept=kept, second_block_faults=second, resting=resting,
                          after_free=after_free, after_release=rss())))
    """
)


def probe(mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(memory.__file__).parents[1]))
    env = {k: v for k, v in env.items() if not k.startswith("MALLOC_")}  # glibc's defaults
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out)


@glibc_only
def test_a_large_block_is_reused_without_faulting_its_pages_in_again() -> None:
    default, kept = probe("default"), probe("keep")
    pages = (BLOCK_MB << 20) // 4096
    assert kept["kept"] is True
    assert default["second_block_faults"] > pages // 2, default  # mapped and unmapped per use
    assert kept["second_block_faults"] < pages // 20, kept  # served from the kept heap


@glibc_only
def test_kept_blocks_go_back_to_the_os_when_the_request_ends() -> None:
    """`release_memory` (called after each request) still returns the kept pages, so the
    process rests at the same size between requests."""
    kept = probe("keep")
    block = BLOCK_MB << 20
    assert kept["after_free"] - kept["resting"] > block // 2, kept  # kept while frames run
    assert kept["after_release"] - kept["resting"] < block // 8, kept  # returned at the end


def test_without_glibc_the_settings_are_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_LIBC", None)
    assert memory.keep_large_blocks() is False
    memory.release_memory()  # no error


def test_the_app_sets_the_heap_before_it_loads_anything(
    monkeypatch: pytest.MonkeyPatch, fake_app_src: Path
) -> None:
    """Every app gets the setting: `TrackingApp` applies it first thing, before the
    checkpoint and the model are looked at."""
    import fakeapp.model as fake_model
    import fakeapp.settings as fake_settings

    from sly_vos import app as app_module

    calls: list[str] = []

    class Stopped(Exception):
        pass

    def checkpoint_or_exit(spec: object) -> None:
        calls.append("checkpoint")
        raise Stopped

    monkeypatch.setattr(app_module, "keep_large_blocks", lambda: calls.append("heap") or True)
    monkeypatch.setattr(app_module, "_checkpoint_or_exit", checkpoint_or_exit)

    class FakeApp(app_module.TrackingApp):
        settings = fake_settings.SETTINGS
        model = fake_model

    with pytest.raises(Stopped):
        FakeApp()
    assert calls == ["heap", "checkpoint"]

"""Regenerate the bundled DAVIS-style sample of the generated app (``<slug>/sample/``).

The clips come from the template's own ``synthetic.py`` (loaded by file path, the package
folder name is a Jinja placeholder), so the sample, the tests and the demo agree. Output is
deterministic. Run from the repository root:

    .venv/bin/python scripts/make_sample.py [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "{{cookiecutter.app_slug}}"
SYNTHETIC = APP / "src" / "{{cookiecutter.__package_name}}" / "synthetic.py"

# (name, make_clip keyword arguments): two crossing shapes, three objects, sparse ids.
CLIPS: list[tuple[str, dict]] = [
    ("crossing", dict(num_frames=12, height=96, width=128, ids=(3, 7), seed=0)),
    ("three-objects", dict(num_frames=12, height=80, width=112, ids=(1, 2, 5), seed=2)),
    ("sparse-ids", dict(num_frames=12, height=80, width=112, ids=(4, 12), seed=4)),
]
README = """# Bundled sample

Three synthetic clips in the DAVIS layout (`JPEGImages/<video>/00000.jpg`, JPEG quality 95;
`Annotations/<video>/00000.png`, palette PNGs whose pixel values are the object ids). Every
frame is annotated; the first annotation is the prompt. Made by `synthetic.make_clip`, so the
ground truth is exact.

Score the app's tracker on it: `python -m {package}.evaluate sample --out eval-out`.
Regenerate it (template repository): `.venv/bin/python scripts/make_sample.py`.
"""


def load_synthetic() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_template_synthetic", SYNTHETIC)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {SYNTHETIC}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while defining classes
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=APP / "sample", help="sample folder")
    args = parser.parse_args(argv)
    synthetic = load_synthetic()
    for sub in ("JPEGImages", "Annotations"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
    clips = [synthetic.make_clip(name=name, **kwargs) for name, kwargs in CLIPS]
    synthetic.write_davis(clips, args.out)
    (args.out / "README.md").write_text(README.replace("{package}", "<package>"), encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(clips)} clips to {args.out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the bundled DAVIS-style sample of the generated app (``<slug>/sample/``).

The clips are ``sly_vos.dev.synthetic.SAMPLE_CLIPS`` (the runtime's synthetic clips), so the
sample, the tests and the demo agree. Output is deterministic. Run from the repository root:

    .venv/bin/python scripts/make_sample.py [--out PATH]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from repo_tools import TEMPLATE_APP_DIR, runtime_on_path

APP = TEMPLATE_APP_DIR
README = """# Bundled sample

Three synthetic clips in the DAVIS layout (`JPEGImages/<video>/00000.jpg`, JPEG quality 95;
`Annotations/<video>/00000.png`, palette PNGs whose pixel values are the object ids). Every
frame is annotated; the first annotation is the prompt. Made by the runtime's
`sly_vos.dev.synthetic`, so the ground truth is exact.

Score the app's tracker on it:
`PYTHONPATH=src python -m sly_vos.dev.evaluate sample --app <package> --out eval-out`.
Regenerate it (template repository): `.venv/bin/python scripts/make_sample.py`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=APP / "sample", help="sample folder")
    args = parser.parse_args(argv)
    runtime_on_path()
    from sly_vos.dev.synthetic import SAMPLE_CLIPS, write_sample

    for sub in ("JPEGImages", "Annotations"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
    write_sample(args.out)
    (args.out / "README.md").write_text(README, encoding="utf-8")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(SAMPLE_CLIPS)} clips to {args.out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

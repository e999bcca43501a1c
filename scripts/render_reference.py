"""Re-render the reference apps (``reference_xmem/``, ``reference_sam2/``) from the template.

For each, renders the answers of its ``.cruft.json`` (``repo_tools.baking.bake``) and syncs
the result into its folder, keeping the files ``tests/reference_instance.py`` declares for it
(the filled-in model, the model's own files) and copying in the runtime, and prints what
changed. Run it after changing the template; the reference test fails until you do (``make
render-reference``). ``--only NAME`` refreshes one of them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from repo_tools.baking import bake  # noqa: E402
from tests.reference_instance import REFERENCES, reference_answers, sync  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[ref.name for ref in REFERENCES])
    args = parser.parse_args(argv)
    for ref in REFERENCES:
        if args.only and ref.name != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="render-reference-") as tmp:
            rendered = bake(Path(tmp), reference_answers(ref.root))
            changed = sync(rendered.root, ref.root, ref)
        for line in changed:
            print(line)
        print(f"{ref.name}: {len(changed)} change(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Re-render ``reference_xmem/`` from the template with its recorded answers.

Renders the answers of ``reference_xmem/.cruft.json`` (``repo_tools.baking.bake``) and syncs
the result into ``reference_xmem/``, keeping the declared filled-in model files and the link
to the runtime (``tests/reference_instance.py`` declares them), and prints what changed. Run
it after changing the template; the reference test fails until you do (``make
render-reference``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from repo_tools.baking import bake  # noqa: E402
from tests.reference_instance import REFERENCE_DIR, reference_answers, sync  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="render-reference-") as tmp:
        rendered = bake(Path(tmp), reference_answers(REFERENCE_DIR))
        changed = sync(rendered.root, REFERENCE_DIR)
    for line in changed:
        print(line)
    print(f"reference_xmem: {len(changed)} change(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

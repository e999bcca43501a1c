"""Re-render ``reference_xmem/`` from the template with its recorded answers.

Keeps the declared filled-in model files (tests/reference_instance.py) and prints what
changed. Run it after changing the template; the reference test fails until you do.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reference_instance import REFERENCE_DIR, rendered_reference, sync  # noqa: E402


def main() -> int:
    with rendered_reference() as rendered:
        changed = sync(rendered, REFERENCE_DIR)
    for line in changed:
        print(line)
    print(f"reference_xmem: {len(changed)} change(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

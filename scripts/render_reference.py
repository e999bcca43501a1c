"""Re-render the reference apps (``reference_xmem/``, ``reference_sam2/``) from the template.

For each, renders the answers of its ``.cruft.json`` (``repo_tools.baking.bake``) and syncs
the result into its folder, keeping the files ``repo_tools/reference.py`` declares for it
(the filled-in model, the model's own files) and copying in the runtime, and prints what
changed. Run it after changing the template; the reference test fails until you do (``make
render-reference``). ``--only NAME`` refreshes one of them.
"""

from __future__ import annotations

import argparse
import sys

from repo_tools.reference import REFERENCES, rendered_reference, sync


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[ref.name for ref in REFERENCES])
    args = parser.parse_args(argv)
    for ref in REFERENCES:
        if args.only and ref.name != args.only:
            continue
        with rendered_reference(reference_dir=ref.root) as rendered:
            changed = sync(rendered, ref.root, ref)
        for line in changed:
            print(line)
        print(f"{ref.name}: {len(changed)} change(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

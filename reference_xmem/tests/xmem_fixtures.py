"""Where the XMem golden fixture and the upstream state-dict layout live: ``tests/data/``.

They are part of the app, so a copy of ``reference_xmem/`` (or the folder pushed as its own
repository) runs every test. ``data/GOLDEN.md`` says how the golden clip was made and what a
parity test must meet.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "golden"
STATE_DICT_SHAPES = DATA / "state_dict_shapes.json"
WEIGHTS_MANIFEST = GOLDEN / "weights_manifest.json"

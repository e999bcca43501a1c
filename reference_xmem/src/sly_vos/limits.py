"""Size limits of one tracking request.

They bound memory and time: a request over a limit is refused with HTTP 413 before any
work is done. Validators read them at call time (``limits.MAX_FRAMES``), so an app can
change them here, and tests can lower them with ``monkeypatch``.
"""

from __future__ import annotations

MAX_FRAMES = 1000  # frames in one request (the annotated frame included)
MAX_FRAME_PIXELS = 4096 * 4096  # height * width of one frame
MAX_TOTAL_PIXELS = 250_000_000  # height * width * frames of one request (~750 MB of RGB)
MAX_OBJECTS = 255  # distinct non-zero ids in the input mask (uint8 label maps)

"""Size limits of one tracking request.

They bound memory and time: a request over a limit is refused with HTTP 413 before any
work is done. Validators read them at call time (``limits.MAX_FRAMES``), so an app can
change them here, and tests can lower them with ``monkeypatch``.
"""

from __future__ import annotations

MAX_FRAMES = 1000  # frames in one request (the annotated frame included)
MAX_FRAME_PIXELS = 4096 * 4096  # height * width of one frame
MAX_FRAME_SIDE = 16384  # height or width of one frame: 8K video fits twice over; longer
# strips than this break image libraries (OpenCV's remap stops at 32767 px a side)
MAX_TOTAL_PIXELS = 250_000_000  # height * width * frames of one request (~750 MB of RGB)
MAX_OBJECTS = 255  # distinct non-zero ids in the input mask (uint8 label maps)

"""How one video is run: precision and the speed switches, as one plain value.

The choice depends on the device (CUDA: batched keys, channels-last, fp16 autocast, dense
memory read; CPU: one frame at a time, fp32, measured convolution kernels, sparse memory
read), but the code that carries it out does not: `Schedule.for_device("cuda", "bf16")`
runs on a CPU too, which is how the tests cover the CUDA schedule without a GPU (bf16
standing in for fp16).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
KEY_CHUNK = 8  # frames per batched key-encoder pass: bounded memory on long videos
log = logging.getLogger("xmem.schedule")
# oneDNN's own answer to "does this CPU compute the dtype in hardware" (AVX512-BF16 / AMX
# for bf16, AVX512-FP16 / AMX-FP16 for fp16): the check its convolutions act on. A probe
# that fails (an older or unusual build) counts as emulated: the warning errs on caution.
_CPU_NATIVE: dict[torch.dtype, Callable[[], bool]] = {
    torch.bfloat16: lambda: bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    torch.float16: lambda: bool(torch.ops.mkldnn._is_mkldnn_fp16_supported()),
}
_warned: set[tuple[str, str]] = set()


def autocast_dtype(precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on this device type; None = plain fp32.

    'auto' is fp16 on CUDA (upstream's choice) and fp32 elsewhere: bf16 is fast only on
    CPUs with native bf16 (AVX512-BF16, AMX), and its accuracy with trained weights is the
    user's call, so it is opt-in.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device_type == "cuda" else None
    return _DTYPES[precision]


def native(dtype: torch.dtype | None, device_type: str) -> bool:
    """Whether this machine computes `dtype` (None = fp32) in hardware. On a CPU without
    it PyTorch emulates bf16/fp16: same results, many times slower than fp32."""
    if dtype is None or dtype == torch.float32:
        return True
    if device_type == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    if device_type == "cpu" and dtype in _CPU_NATIVE:
        try:
            return _CPU_NATIVE[dtype]()
        except (AttributeError, RuntimeError):
            return False
    return True  # other devices: nothing known to warn about


def warn_if_emulated(precision: str, device_type: str) -> bool:
    """Log once per process (per precision and device type) when `precision` would be
    emulated here; the user opted into it for speed and would get the opposite. Returns
    whether it is native."""
    dtype = autocast_dtype(precision, device_type)
    if native(dtype, device_type):
        return True
    if (precision, device_type) not in _warned:
        _warned.add((precision, device_type))
        log.warning(
            "precision %r: this %s has no native %s, so PyTorch emulates it, many times "
            "slower than fp32 (XMEM.md has figures); use 'fp32' or 'auto' here%s",
            precision,
            "GPU" if device_type == "cuda" else device_type.upper(),
            str(dtype).removeprefix("torch."),
            ", or a CPU with AVX512-BF16 / AMX" if device_type == "cpu" else "",
        )
    return False


@dataclass(frozen=True)
class Schedule:
    """Everything `propagate` decides before the first frame (see `for_device`)."""

    device_type: str
    precision: str  # as asked ('auto' resolved into dtype)
    dtype: torch.dtype | None  # autocast dtype, None = fp32
    batch_keys: bool  # encode key_chunk frames' keys per pass, ahead of the loop
    key_chunk: int
    channels_last: bool  # network and frames in channels-last (fast low-precision convs)
    sparse_read: bool  # top-k-only sparse memory readout (CSR) instead of dense
    fast_convs: bool  # measured conv kernels and folded batch norms
    share_image: bool  # image half of the fusion convs computed once for all objects
    fast_argmax: bool  # argmax as element-wise passes

    @classmethod
    def for_device(
        cls,
        device_type: str,
        precision: str = "auto",
        *,
        batch_keys: bool | None = None,
        key_chunk: int = KEY_CHUNK,
        fast_ops: bool = True,
    ) -> Schedule:
        """The schedule for a device type. CUDA: batched keys, channels-last under
        autocast, dense read. Elsewhere: one frame per pass (batching measured slower on
        CPU: larger activations fall out of cache), measured conv kernels, sparse read.
        `fast_ops=False` is upstream's plain loop (dense read, per-object fusion, direct
        convs)."""
        dtype = autocast_dtype(precision, device_type)
        cuda = device_type == "cuda"
        batch = cuda if batch_keys is None else bool(batch_keys)
        return cls(
            device_type=device_type,
            precision=precision,
            dtype=dtype,
            batch_keys=batch,
            key_chunk=max(1, int(key_chunk)) if batch else 1,
            channels_last=cuda and dtype is not None,
            sparse_read=fast_ops and not cuda,
            fast_convs=fast_ops and not cuda,
            share_image=fast_ops,
            fast_argmax=fast_ops,
        )

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """Autocast to `dtype` on the device the tensors are on (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

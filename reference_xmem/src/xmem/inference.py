"""Per-frame XMem engine and `segment_video`, the one call external code uses.

The schedule follows upstream's `InferenceCore.step` exactly (memory every `mem_every`
frames, deep hidden update synchronised with memory frames, consolidation into
long-term memory). For speed, the query keys of several frames can be encoded in one
batched pass ahead of the sequential memory loop (`batch_keys=True`, the CUDA default);
the key encoder does not depend on memory, so this changes nothing but the batch size.
On CPU the speed comes from cheaper arithmetic for the same maths (`fast_ops`, see
`segment_video` and `conv.py`). Which of these a run uses, and its precision, is one
`schedule.Schedule`, chosen per device but carried out by device-agnostic code.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .conv import fast_convs
from .memory import MemoryManager
from .network import XMemNetwork, aggregate
from .schedule import KEY_CHUNK, Schedule, warn_if_emulated

DEFAULT_CONFIG: dict[str, int | bool] = {
    "top_k": 30,
    "mem_every": 5,
    "deep_update_every": -1,
    "enable_long_term": True,
    "enable_long_term_count_usage": True,
    "num_prototypes": 128,
    "min_mid_term_frames": 5,
    "max_mid_term_frames": 10,
    "max_long_term_elements": 10000,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_MULTIPLE = 16
T = TypeVar("T")


def resolve_config(config: dict | None) -> dict:
    """DEFAULT_CONFIG overridden by `config`; unknown keys and bad values raise ValueError."""
    cfg = dict(DEFAULT_CONFIG)
    if config:
        unknown = sorted(set(config) - set(DEFAULT_CONFIG))
        if unknown:
            raise ValueError(
                f"unknown XMem config key(s): {', '.join(map(str, unknown))}; "
                f"known: {', '.join(DEFAULT_CONFIG)}"
            )
        cfg.update(config)
    for name in (
        "top_k",
        "mem_every",
        "num_prototypes",
        "min_mid_term_frames",
        "max_mid_term_frames",
        "max_long_term_elements",
    ):
        value = cfg[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"config[{name!r}] must be a positive integer, got {cfg[name]!r}")
        cfg[name] = int(cfg[name])
    due = cfg["deep_update_every"]
    if isinstance(due, bool) or not isinstance(due, (int, np.integer)) or due == 0:
        raise ValueError(
            f"config['deep_update_every'] must be a non-zero integer (-1: with memory "
            f"frames), got {due!r}"
        )
    cfg["deep_update_every"] = int(due)
    if cfg["min_mid_term_frames"] >= cfg["max_mid_term_frames"]:
        raise ValueError("config: min_mid_term_frames must be < max_mid_term_frames")
    if cfg["num_prototypes"] > cfg["max_long_term_elements"]:
        raise ValueError("config: num_prototypes must be <= max_long_term_elements")
    for name in ("enable_long_term", "enable_long_term_count_usage"):
        if not isinstance(cfg[name], (bool, np.bool_)):
            raise ValueError(f"config[{name!r}] must be a bool, got {cfg[name]!r}")
        cfg[name] = bool(cfg[name])
    return cfg


# ------------------------------------------------------------------------- geometry
def working_size(h: int, w: int, size: int) -> tuple[int, int]:
    """Short side -> `size` (long side truncated, as torchvision Resize); never upsample."""
    if size == -1 or min(h, w) <= size:
        return h, w
    if size <= 0:
        raise ValueError(f"size must be -1 (native) or positive, got {size}")
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def pad_amounts(h: int, w: int, d: int = PAD_MULTIPLE) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) to reach multiples of d; floor half on top/left."""
    ph = (d - h % d) % d
    pw = (d - w % d) % d
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def unpad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


@dataclass
class EncodedFrame:
    """Everything the engine needs from one frame, before touching memory."""

    image: torch.Tensor  # [1, 3, Hp, Wp] normalised, padded
    key: torch.Tensor  # [1, CK, h, w]
    shrinkage: torch.Tensor  # [1, 1, h, w]
    selection: torch.Tensor  # [1, CK, h, w]
    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor


class FramePreprocessor:
    """uint8 RGB frames -> normalised, resized, padded tensors (normalise before resize,
    as upstream eval does; padding is 0 in normalised space = mean colour)."""

    def __init__(
        self,
        src_hw: tuple[int, int],
        work_hw: tuple[int, int],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        self.src_hw = src_hw
        self.work_hw = work_hw
        self.pad = pad_amounts(*work_hw)
        self.device = device
        self.channels_last = channels_last
        self.mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(frames)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float() / 255
        x = (x - self.mean) / self.std
        if self.work_hw != self.src_hw:
            x = F.interpolate(
                x, size=self.work_hw, mode="bilinear", align_corners=False, antialias=True
            )
        x = F.pad(x, self.pad)
        # The HWC source makes x channels_last-strided. Keep that only for CUDA fp16 convs;
        # on CPU plain NCHW is faster overall (mixed layouts in the decoder cost reorders).
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)


def _flag_last(items: Iterable[T]) -> Iterator[tuple[T, bool]]:
    """``(item, is_last)``, holding one item back: the last frame skips its memory update."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def encode_frames(
    network: XMemNetwork,
    frames: Iterable[np.ndarray],
    prep: FramePreprocessor,
    chunk: int,
    contexts: Callable[[], contextlib.AbstractContextManager] = torch.inference_mode,
) -> Iterator[tuple[EncodedFrame, bool]]:
    """Yield ``(key features, is_last)`` frame by frame, computing them `chunk` frames at a
    time under `contexts()`. Frames are read only as needed (a chunk plus one ahead), and
    only one chunk of features is alive at once, so memory stays bounded on any length."""
    flagged = _flag_last(frames)
    while batch := list(itertools.islice(flagged, chunk)):
        with contexts():
            images = prep([frame for frame, _ in batch])
            key, shrinkage, selection, f16, f8, f4 = network.encode_key(images)
        for i, (_, last) in enumerate(batch):
            s = slice(i, i + 1)
            yield (
                EncodedFrame(images[s], key[s], shrinkage[s], selection[s], f16[s], f8[s], f4[s]),
                last,
            )
        del images, key, shrinkage, selection, f16, f8, f4, batch


def argmax_channels(prob: torch.Tensor) -> torch.Tensor:
    """`prob.argmax(dim=0)` for [C, H, W] with few channels, as C element-wise passes:
    on CPU the strided reduction over a short leading dim was ~10x slower (0.2 s at 480p).
    Same tie rule (first maximum wins); inputs hold no NaN."""
    best = prob[0]
    index = torch.zeros(prob.shape[1:], dtype=torch.long, device=prob.device)
    for c in range(1, prob.shape[0]):
        index.masked_fill_(prob[c] > best, c)
        best = torch.maximum(best, prob[c])
    return index


# --------------------------------------------------------------------------- engine
class XMemEngine:
    """Upstream's `InferenceCore.step` schedule for one video with all objects on frame 0."""

    def __init__(
        self,
        network: XMemNetwork,
        num_objects: int,
        config: dict,
        fast: bool = True,
        sparse_read: bool | None = None,
    ) -> None:
        self.network = network
        self.fast = fast
        self.num_objects = num_objects
        self.config = config
        self.mem_every = config["mem_every"]
        self.deep_update_every = config["deep_update_every"]
        self.deep_sync = self.deep_update_every < 0
        self.enable_long_term = config["enable_long_term"]
        self.memory = MemoryManager(config, network.hidden_dim, fast=fast, sparse=sparse_read)
        self.curr_ti = -1
        self.last_mem_ti = 0
        self.last_deep_update_ti = -self.deep_update_every

    def step(
        self, enc: EncodedFrame, mask: torch.Tensor | None = None, end: bool = False
    ) -> torch.Tensor:
        """One frame. mask: [K, Hp, Wp] one-hot (first frame). Returns [K+1, Hp, Wp] probs.
        `end` skips the final memory write / hidden update (never changes the output)."""
        self.curr_ti += 1
        t = self.curr_ti
        is_mem = (t - self.last_mem_ti >= self.mem_every or mask is not None) and not end
        need_segment = t > 0 and mask is None
        if self.deep_sync:
            deep_update = is_mem
        else:
            deep_update = (t - self.last_deep_update_ti >= self.deep_update_every) and not end
        normal_update = (not self.deep_sync or not deep_update) and not end
        mem = self.memory
        net = self.network

        prob = None
        if need_segment:
            readout = mem.match_memory(enc.key, enc.selection)
            hidden, prob = net.segment(
                enc.f16,
                enc.f8,
                enc.f4,
                readout,
                mem.hidden,
                h_out=normal_update,
                share_image=self.fast,
            )
            prob = prob[0]
            if normal_update and hidden is not None:
                mem.hidden = hidden
        if mask is not None:
            # Objects are all given on the first frame; aggregate the one-hot (not raw),
            # in float32 even under autocast (1 - 1e-7 does not exist in fp16).
            prob = aggregate(mask.float(), dim=0)
            mem.create_hidden(self.num_objects, enc.key)
        if prob is None:  # frame > 0 with segmentation off cannot happen here
            raise RuntimeError("no mask for the first frame")

        if is_mem:
            value, hidden = net.encode_value(
                enc.image,
                enc.f16,
                mem.hidden,
                prob[1:].unsqueeze(0),
                deep_update=deep_update,
                share_image=self.fast,
            )
            mem.add_memory(
                enc.key, enc.shrinkage, value, enc.selection if self.enable_long_term else None
            )
            self.last_mem_ti = t
            if deep_update:
                mem.hidden = hidden
                self.last_deep_update_ti = t
        mem.stats.trace.append((t, mem.work_size, mem.long_size))
        return prob


# ----------------------------------------------------------------------- public API
def _validate_inputs(frames: Sequence[np.ndarray], input_mask: np.ndarray) -> tuple[int, int]:
    if not isinstance(frames, (Sequence, np.ndarray)) or len(frames) == 0:
        raise ValueError("frames must be a non-empty list of HxWx3 uint8 arrays")
    first = np.asarray(frames[0])
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be HxWx3 uint8 RGB, frame 0 is {first.shape} {first.dtype}")
    h, w = first.shape[:2]
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.shape != (h, w, 3) or f.dtype != np.uint8:
            raise ValueError(f"frame {i} is {f.shape} {f.dtype}, expected {(h, w, 3)} uint8")
    m = np.asarray(input_mask)
    if m.shape != (h, w):
        raise ValueError(f"input_mask shape {m.shape} does not match frames {(h, w)}")
    if not (np.issubdtype(m.dtype, np.integer) or m.dtype == np.bool_):
        raise ValueError(f"input_mask must hold integer ids, got dtype {m.dtype}")
    return h, w


def _object_ids(mask: np.ndarray) -> list[int]:
    ids = np.unique(mask)
    if ids.size and ids.min() < 0:
        raise ValueError(f"input_mask has negative ids ({int(ids.min())}); ids must be 0..255")
    if ids.size and ids.max() > 255:
        raise ValueError(
            f"input_mask has ids above 255 ({int(ids.max())}); "
            "output masks are uint8, so ids must be 0..255"
        )
    return [int(i) for i in ids if i != 0]


def segment_video(
    network: XMemNetwork,
    frames: Sequence[np.ndarray],
    input_mask: np.ndarray,
    size: int = 480,
    config: dict | None = None,
    *,
    batch_keys: bool | None = None,
    key_chunk: int = KEY_CHUNK,
    fast_ops: bool = True,
    precision: str = "auto",
    schedule: Schedule | None = None,
    stats: dict | None = None,
) -> list[np.ndarray]:
    """Propagate the frame-0 label mask through `frames`.

    frames: HxWx3 uint8 RGB; input_mask: HxW integer ids (0 background, 1..255, gaps ok).
    size: short side to work at (-1 native; never upsampled). Returns one HxW uint8 mask
    per frame with the caller's ids; [0] is the input mask. `propagate` is the same as a
    generator over an iterable of frames (one mask per frame as soon as it exists).

    `precision`: 'auto' (fp16 autocast on CUDA, as upstream; fp32 elsewhere), 'fp32',
    'bf16' or 'fp16' (autocast to that dtype on any device; the memory read's similarity,
    softmax and readout sums and the mask aggregation stay fp32). bf16 on CPU is opt-in:
    fast only where the CPU has native bf16 (AVX512-BF16 / AMX), emulated elsewhere.

    Speed switches (outputs agree up to float rounding; for benchmarks and debugging):
    `batch_keys` encodes the keys of `key_chunk` frames per pass ahead of the memory loop
    (None = auto: on for CUDA, off for CPU, where batching measured 4-12% slower per frame
    at 240p-480p because the larger activations fall out of cache). `fast_ops` (default on):
    sparse top-k memory read, image half of the fusion convs computed once for all objects,
    and on CPU each convolution shape through the kernel measured fastest on this machine
    at its first use (oneDNN direct, channels-last, NNPACK Winograd, GEMM; see `conv.py`)
    with batch norms folded into the ResNet convs; `fast_ops=False` is upstream's dense
    read, per-object fusion and direct convs. batch_keys=False, fast_ops=False is the plain
    upstream loop. `schedule` overrides all of these with an explicit `Schedule` (e.g. the
    CUDA one on a CPU, for tests). `stats`, if given, is filled with memory counters
    (consolidations, sizes, per-frame trace).
    """
    _validate_inputs(frames, input_mask)
    return list(
        propagate(
            network,
            frames,
            input_mask,
            size,
            config,
            batch_keys=batch_keys,
            key_chunk=key_chunk,
            fast_ops=fast_ops,
            precision=precision,
            schedule=schedule,
            stats=stats,
        )
    )


def _checked_frames(frames: Iterable[np.ndarray], h: int, w: int) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        f = np.asarray(frame)
        if f.shape != (h, w, 3) or f.dtype != np.uint8:
            raise ValueError(f"frame {i} is {f.shape} {f.dtype}, expected {(h, w, 3)} uint8")
        yield f


def propagate(
    network: XMemNetwork,
    frames: Iterable[np.ndarray],
    input_mask: np.ndarray,
    size: int = 480,
    config: dict | None = None,
    *,
    batch_keys: bool | None = None,
    key_chunk: int = KEY_CHUNK,
    fast_ops: bool = True,
    precision: str = "auto",
    schedule: Schedule | None = None,
    stats: dict | None = None,
) -> Iterator[np.ndarray]:
    """`segment_video` as a generator: reads `frames` (any iterable, the annotated frame
    first) as it goes and yields each mask as soon as it is computed, first the input mask.

    At most a key chunk plus one frame is read ahead (1 + 1 on CPU). Torch's inference mode,
    autocast and the fast convolutions are switched on around each step only, never while
    the caller holds a yielded mask. `stats` is filled when the generator is exhausted.
    """
    device = next(network.parameters()).device
    if schedule is None:
        schedule = Schedule.for_device(
            device.type, precision, batch_keys=batch_keys, key_chunk=key_chunk, fast_ops=fast_ops
        )
    warn_if_emulated(schedule.precision, device.type)
    mask = np.asarray(input_mask)
    if mask.ndim != 2:
        raise ValueError(f"input_mask must be HxW, got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(f"input_mask must hold integer ids, got dtype {mask.dtype}")
    h, w = mask.shape
    ids = _object_ids(mask)
    cfg = resolve_config(config)
    if (
        not isinstance(size, (int, np.integer))
        or isinstance(size, bool)
        or (size != -1 and size <= 0)
    ):
        raise ValueError(f"size must be -1 (native) or a positive int, got {size!r}")
    first = mask.astype(np.uint8)
    if stats is not None:
        stats.clear()
        stats.update(
            num_objects=len(ids),
            consolidations=0,
            work_elements=0,
            long_term_elements=0,
            trace=[],
            working_hw=working_size(h, w, int(size)),
        )
    checked = _checked_frames(frames, h, w)
    if not ids:  # nothing to track: all background
        for t, _ in enumerate(checked):
            yield first.copy() if t == 0 else np.zeros((h, w), np.uint8)
        return

    if schedule.channels_last:
        network.to(memory_format=torch.channels_last)  # same values; faster fp16 convs
    work_hw = working_size(h, w, int(size))
    prep = FramePreprocessor((h, w), work_hw, device, channels_last=schedule.channels_last)
    chunk = schedule.key_chunk if schedule.batch_keys else 1
    k = len(ids)

    def contexts() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(schedule.autocast(device.type))
        stack.enter_context(fast_convs(schedule.fast_convs))
        return stack

    with contexts():
        lut = torch.tensor([0] + ids, dtype=torch.uint8, device=device)
        labels = torch.from_numpy(first).to(device)
        onehot = torch.stack([labels == i for i in ids]).float()  # [K, H, W]
        if work_hw != (h, w):
            onehot = F.interpolate(onehot.unsqueeze(0), size=work_hw, mode="nearest")[0]
        onehot = F.pad(onehot, prep.pad)
        engine = XMemEngine(
            network, k, cfg, fast=schedule.share_image, sparse_read=schedule.sparse_read
        )
    pending: list[torch.Tensor] = []  # device masks, copied to host once per chunk
    for t, (enc, last) in enumerate(encode_frames(network, checked, prep, chunk, contexts)):
        with contexts():
            prob = engine.step(enc, onehot if t == 0 else None, end=(last and t > 0))
            if t > 0:
                prob = unpad(prob, prep.pad).float()
                if work_hw != (h, w):
                    prob = F.interpolate(
                        prob.unsqueeze(0), size=(h, w), mode="bilinear", align_corners=False
                    )[0]
                pending.append(
                    lut[argmax_channels(prob) if schedule.fast_argmax else prob.argmax(dim=0)]
                )
            del prob, enc
            ready = t == 0 or len(pending) >= chunk or last
            host = torch.stack(pending).cpu().numpy() if ready and pending else None
        if t == 0:
            yield first.copy()
        if host is not None:
            pending.clear()
            yield from host
    if stats is not None:
        mem = engine.memory
        stats.update(
            consolidations=mem.stats.consolidations,
            work_elements=mem.work_size,
            long_term_elements=mem.long_size,
            trace=list(mem.stats.trace),
            removed_long_term=mem.stats.removed_long_term,
        )

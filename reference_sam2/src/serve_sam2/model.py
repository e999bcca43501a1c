"""SAM 2.1 behind the app: transformers' ``Sam2VideoModel`` driven one frame at a time.

The network, its memory bank and its inference session are transformers' (pinned in
requirements.txt); this file only prepares inputs the way transformers' Sam2 processors do
(they need torchvision, which we do not ship) and turns logits into a label map:

* frames: HxWx3 uint8 -> 1x3xHxW, antialiased bilinear resize *on uint8* to the model's
  SxS (the CPU kernel the processor's resize ends up in), then the processor's fused
  rescale + ImageNet normalisation ``(x - 255 * mean) / (255 * std)``;
* the annotated mask: one {0,1} plane per object, antialiased bilinear resize to SxS,
  ``>= 0.5`` (the processor's mask input rule);
* outputs: ``pred_masks`` (K x 1 x S/4 x S/4 logits) bilinearly upsampled to HxW (the
  processor's ``post_process_masks``); a pixel goes to the object with the highest logit
  when that logit is > 0 (overlaps are ours to settle: SAM 2 scores objects independently).

Streaming: each frame is preprocessed and fed to the model as ``track`` reads it, and its
mask is yielded before the next frame is read. The session keeps every frame's tensors and
outputs for ever; we drop what the model can no longer read (frames already encoded, the
full-resolution masks used only for the memory encoder, outputs older than the memory and
object-pointer windows), so memory stays flat however long the video.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2VideoConfig, Sam2VideoModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from sly_vos.checkpoints import Checkpoint

WEIGHTS_REQUIRED = True
# make_test_weights writes a randomly initialised network: it runs, it does not track.
RANDOM_TEST_WEIGHTS = True
WEIGHTS_FILES = ("config.json", "model.safetensors")  # transformers' layout of a checkpoint
TEST_WEIGHTS_DIR = "sam2-random"
TEST_IMAGE_SIZE = 128  # S of the test weights: small, so a frame takes tenths of a second
RESCALE_FACTOR = 1 / 255  # the processor's do_rescale factor, fused into mean and std
# Meta's SAM 2.1 in transformers' layout on the Hub; $SERVE_SAM2_CHECKPOINT picks one. No
# sha256 is published for them. Pin HUB_REVISION to a commit hash for reproducible images.
HUB_REVISION = "main"
CHECKPOINTS = tuple(
    Checkpoint(
        size,
        WEIGHTS_FILES,
        hub_repo=f"facebook/sam2.1-hiera-{size}",
        revision=HUB_REVISION,
        default=size == "tiny",
        note=note,
    )
    for size, note in (
        ("tiny", "39 M parameters, 156 MB; SA-V test J&F 76.5"),
        ("small", "46 M parameters; SA-V test J&F 76.6"),
        ("base-plus", "81 M parameters; SA-V test J&F 78.2"),
        ("large", "224 M parameters; SA-V test J&F 79.5"),
    )
)


class WeightsLayoutError(ValueError):
    """The weights path is not a transformers SAM 2 checkpoint (config + safetensors)."""


def checkpoint_dir(weights_path: Path | None) -> Path:
    """The folder holding config.json + model.safetensors (a path to either file is accepted)."""
    if weights_path is None:
        raise WeightsLayoutError(
            "SAM 2 needs a checkpoint folder (config.json + model.safetensors)"
        )
    folder = Path(weights_path)
    if folder.is_file():
        folder = folder.parent
    missing = [name for name in WEIGHTS_FILES if not (folder / name).is_file()]
    if missing:
        raise WeightsLayoutError(
            f"weights {weights_path}: a SAM 2 checkpoint is a folder with "
            f"{' + '.join(WEIGHTS_FILES)}; missing {', '.join(missing)}"
        )
    return folder


def load_model(weights_path: Path | None, device: str) -> Sam2VideoModel:
    """Load the checkpoint strictly: any missing, unexpected or mismatched key is an error."""
    folder = checkpoint_dir(weights_path)
    try:
        model, info = Sam2VideoModel.from_pretrained(folder, output_loading_info=True)
    except (OSError, RuntimeError, ValueError) as exc:  # transformers raises RuntimeError on
        # mismatched shapes: re-raised as a weights error, not a device failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsLayoutError(f"weights {folder} do not fit Sam2VideoModel: {first}") from exc
    problems = {k: v for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise WeightsLayoutError(f"weights {folder} do not fit Sam2VideoModel: {problems or info}")
    return model.to(device).eval()


class Preprocess:
    """The Sam2 processors' numeric steps for one frame and for the annotated mask."""

    def __init__(self, image_size: int, device: str) -> None:
        self.size = (image_size, image_size)
        self.device = device
        scale = 1.0 / RESCALE_FACTOR
        self.mean = (torch.tensor(IMAGENET_DEFAULT_MEAN) * scale).view(1, 3, 1, 1)
        self.std = (torch.tensor(IMAGENET_DEFAULT_STD) * scale).view(1, 3, 1, 1)

    def frame(self, frame: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 RGB -> 1x3xSxS float32, normalised (resized on the CPU, in uint8)."""
        pixels = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
        pixels = pixels.contiguous().unsqueeze(0)
        pixels = F.interpolate(
            pixels, self.size, mode="bilinear", align_corners=False, antialias=True
        )
        normalised = (pixels.to(torch.float32) - self.mean) / self.std
        return normalised.to(self.device)

    def mask(self, plane: np.ndarray) -> torch.Tensor:
        """HxW bool -> 1x1xSxS float {0,1}."""
        mask = torch.from_numpy(np.ascontiguousarray(plane)).to(torch.float32)[None, None]
        if tuple(mask.shape[-2:]) != self.size:
            mask = F.interpolate(
                mask, self.size, mode="bilinear", align_corners=False, antialias=True
            )
            mask = (mask >= 0.5).to(torch.float32)
        return mask.to(self.device)


def logits_to_labels(pred_masks: torch.Tensor, height: int, width: int) -> np.ndarray:
    """K x 1 x h x w logits -> HxW uint8 ids 0..K (highest positive logit wins)."""
    logits = F.interpolate(
        pred_masks.float(), (height, width), mode="bilinear", align_corners=False
    )
    best, index = logits[:, 0].max(dim=0)
    labels = torch.where(best > 0, index + 1, torch.zeros_like(index))
    return labels.to(torch.uint8).cpu().numpy()


class Tracker:
    """One loaded SAM 2 network; each ``track`` call runs in a fresh inference session."""

    def __init__(self, weights_path: Path | None, device: str) -> None:
        self.device = device
        self.model = load_model(weights_path, device)
        config = self.model.config
        self.preprocess = Preprocess(int(config.image_size), device)
        # Frame t reads outputs of frames t-1 .. t-window (memory bank and object pointers).
        self.window = max(config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1, 1)

    def track(self, frames: Iterable[np.ndarray], label_mask: np.ndarray) -> Iterator[np.ndarray]:
        """frames: HxWx3 uint8 RGB, read one by one; label_mask: HxW uint8 ids 1..K. Yields the
        label mask itself for the annotated frame, then each frame's mask as it is computed."""
        frames = iter(frames)
        height, width = label_mask.shape
        ids = [int(k) for k in np.unique(label_mask) if k != 0]
        session = self.new_session(height, width)
        try:
            for index, frame in enumerate(frames):
                with torch.inference_mode():
                    if index == 0:
                        self.add_objects(session, label_mask, ids)
                    output = self.model(
                        inference_session=session,
                        frame=self.preprocess.frame(frame),
                        frame_idx=index,
                    )
                    labels = logits_to_labels(output.pred_masks, height, width)
                    self.forget(session, index)
                del output
                yield label_mask.copy() if index == 0 else labels
        finally:
            session.reset_inference_session()

    def new_session(self, height: int, width: int) -> Sam2VideoInferenceSession:
        """A streaming session (no video up front), everything on the tracker's device."""
        return Sam2VideoInferenceSession(
            video_height=height,
            video_width=width,
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=torch.float32,
        )

    def add_objects(
        self, session: Sam2VideoInferenceSession, label_mask: np.ndarray, ids: list[int]
    ) -> None:
        """One mask input per object on frame 0, all objects declared new together (as the
        processor's ``add_inputs_to_inference_session`` does with masks)."""
        for obj_id in ids:
            obj_idx = session.obj_id_to_idx(obj_id)
            session.add_mask_inputs(obj_idx, 0, self.preprocess.mask(label_mask == obj_id))
        session.obj_with_new_inputs = list(ids)

    def forget(self, session: Sam2VideoInferenceSession, index: int) -> None:
        """Drop what no later frame reads: this frame's pixels, full-size masks kept only for
        the memory encoder, and outputs that fell out of the window."""
        session.processed_frames.pop(index, None)
        stale = index - self.window
        for obj_idx, outputs in session.output_dict_per_obj.items():
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                entry = outputs[kind].get(index)
                if entry is not None:
                    entry.pop("high_res_masks", None)
            outputs["non_cond_frame_outputs"].pop(stale, None)
            session.frames_tracked_per_obj[obj_idx].pop(stale, None)


def small_config(image_size: int = TEST_IMAGE_SIZE) -> Sam2VideoConfig:
    """SAM 2.1 hiera-tiny's architecture at a small input size (same parameters)."""
    config = Sam2VideoConfig(
        image_size=image_size, memory_attention_rope_feat_sizes=[image_size // 16] * 2
    )
    config.vision_config.backbone_feature_sizes = [[image_size // s] * 2 for s in (4, 8, 16)]
    config.prompt_encoder_config.image_size = image_size
    return config


def write_random_weights(folder: Path, config: Sam2VideoConfig, seed: int = 0) -> Path:
    """A randomly initialised network saved in transformers' layout, written atomically."""
    folder = Path(folder)
    if all((folder / name).is_file() for name in WEIGHTS_FILES):
        return folder
    torch.manual_seed(seed)
    partial = folder.with_name(folder.name + ".partial")
    Sam2VideoModel(config).save_pretrained(partial)
    json.loads((partial / "config.json").read_text())  # fail here, not at load, on a bad save
    partial.replace(folder)
    return folder


def make_test_weights(directory: Path) -> Path | None:
    """Random hiera-tiny weights at S=128 (156 MB, no download); reused when present."""
    return write_random_weights(Path(directory) / TEST_WEIGHTS_DIR, small_config())

"""The app's masks equal, frame by frame, those of transformers' SAM 2 video model driven
directly, with the preprocessing of transformers' own Sam2 processors.

torchvision does not load against the CPU torch wheel, so the processors cannot run here:
``reference_masks`` reproduces their numeric steps from their source (transformers 5.23.0:
``Sam2VideoVideoProcessor`` / ``Sam2ImageProcessor`` resize bilinear with antialias on uint8,
then the fused rescale + ImageNet normalisation; ``Sam2VideoProcessor`` prepares mask inputs
as bilinear antialias resize then ``>= 0.5``; ``post_process_masks`` upsamples bilinearly).
Where torchvision does load, ``test_preprocessing_equals_the_processors`` checks the app's
steps against the processors themselves. The reference keeps every frame and every output
in its session (nothing dropped) and lets the session number the streamed frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Sam2VideoModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

import sam2_fixtures
from serve_sam2 import model as sam2
from sly_vos.dev import synthetic

NUM_FRAMES = 9  # > 2 + window of the short-memory config: outputs are dropped mid-clip


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sam2_fixtures.short_memory_weights(tmp_path_factory)


def processor_pixel_values(frames: list[np.ndarray], size: int) -> torch.Tensor:
    """The video processor's steps on a whole clip: TxHxWx3 -> Tx3xHxW contiguous, resize on
    uint8, one fused rescale + normalise (mean and std divided by the rescale factor)."""
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    video = F.interpolate(video, (size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN) * (1.0 / (1 / 255))
    std = torch.tensor(IMAGENET_DEFAULT_STD) * (1.0 / (1 / 255))
    return video.to(torch.float32).sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def processor_mask_input(plane: np.ndarray, size: int) -> torch.Tensor:
    """``Sam2VideoProcessor``'s mask input: bool -> 1x1xHxW float, resize, ``>= 0.5``."""
    mask = torch.tensor(plane, dtype=torch.bool)[None, None].float()
    mask = F.interpolate(mask, (size, size), align_corners=False, mode="bilinear", antialias=True)
    return (mask >= 0.5).float()


def reference_masks(
    weights: Path, frames: list[np.ndarray], label_mask: np.ndarray
) -> list[np.ndarray]:
    """transformers' documented streaming loop, everything kept in the session."""
    model = Sam2VideoModel.from_pretrained(weights).eval()
    size = int(model.config.image_size)
    height, width = label_mask.shape
    pixel_values = processor_pixel_values(frames, size)
    # As the processor's init_video_session builds it (its dtype default is torch.float32).
    session = Sam2VideoInferenceSession(video_height=height, video_width=width, dtype=torch.float32)
    ids = [int(k) for k in np.unique(label_mask) if k]
    for obj_id in ids:
        session.add_mask_inputs(
            session.obj_id_to_idx(obj_id), 0, processor_mask_input(label_mask == obj_id, size)
        )
    session.obj_with_new_inputs = ids
    out = []
    with torch.inference_mode():
        for frame in pixel_values:
            pred = model(inference_session=session, frame=frame).pred_masks
            logits = F.interpolate(pred, (height, width), mode="bilinear", align_corners=False)
            best, index = logits[:, 0].max(dim=0)
            out.append(torch.where(best > 0, index + 1, 0).to(torch.uint8).numpy())
    assert len(session.processed_frames) == len(frames)  # the reference dropped nothing
    return out


def test_masks_equal_transformers_driven_directly(weights: Path) -> None:
    clip = synthetic.make_clip(num_frames=NUM_FRAMES, height=72, width=96, ids=(1, 2), seed=7)
    tracker = sam2.Tracker(weights, "cpu")
    assert tracker.window == sam2_fixtures.SHORT_WINDOW
    ours = list(tracker.track(iter(clip.frames), clip.masks[0]))
    theirs = reference_masks(weights, clip.frames, clip.masks[0])
    assert len(ours) == NUM_FRAMES
    np.testing.assert_array_equal(ours[0], clip.masks[0])  # the annotated frame: the input
    for index in range(1, NUM_FRAMES):
        np.testing.assert_array_equal(ours[index], theirs[index], err_msg=f"frame {index}")
    # Random weights give a noise texture: make sure the comparison is not of empty masks.
    assert all(set(np.unique(mask)) == {0, 1, 2} for mask in theirs[1:])


def _processors() -> tuple[object, object]:
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # the CUDA-only wheel raises RuntimeError at import
        pytest.skip(f"torchvision does not load here ({type(exc).__name__}): processors unusable")
    from transformers import Sam2ImageProcessor, Sam2VideoVideoProcessor

    return Sam2ImageProcessor(), Sam2VideoVideoProcessor()


def test_preprocessing_equals_the_processors() -> None:
    image_processor, video_processor = _processors()
    clip = synthetic.make_clip(num_frames=2, height=70, width=90, ids=(1,), seed=3)
    steps = sam2.Preprocess(1024, "cpu")
    videos = video_processor(videos=[np.stack(clip.frames)], return_tensors="pt")
    images = image_processor(images=clip.frames[1], return_tensors="pt")
    for index, frame in enumerate(clip.frames):
        expected = videos.pixel_values_videos[0][index]
        torch.testing.assert_close(steps.frame(frame)[0], expected, rtol=0, atol=0)
    torch.testing.assert_close(steps.frame(clip.frames[1]), images.pixel_values, rtol=0, atol=0)

"""SAM through the original ``segment-anything`` package: a released ``sam_vit_{b,l,h}_*.pth`` file.

The architecture is read from the checkpoint itself (embedding width, depth, heads from the relative-position
tables, which blocks attend globally), so any SAM ViT checkpoint loads without naming its size. Box prompts go
through ``SamPredictor``; automatic regions through ``SamAutomaticMaskGenerator`` with our grid and filters.
Half precision on CUDA runs under autocast (the package keeps fp32 weights).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agent.core.errors import brief
from tools.base import ToolError
from tools.device import half_dtype, resolve_device

EMBED_TOKENS = 64  # SAM's image encoder: 1024 px input, 16 px patches -> 64 x 64 tokens


def architecture(state: dict[str, Any]) -> dict[str, Any]:
    """``segment_anything.build_sam._build_sam`` arguments read from a SAM state dict."""
    try:
        dim = int(state["image_encoder.patch_embed.proj.weight"].shape[0])
        blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
        rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in blocks]
    except KeyError as exc:
        raise ToolError(f"not a SAM checkpoint: it has no {exc} (expected segment-anything's sam_vit_*.pth)") from None
    return {"encoder_embed_dim": dim, "encoder_depth": len(blocks), "encoder_num_heads": dim // int(rel[0].shape[1]),
            "encoder_global_attn_indexes": [i for i, r in zip(blocks, rel) if r.shape[0] == 2 * EMBED_TOKENS - 1]}


class OriginalSam:
    """``segment(image, boxes)`` -> ``(masks (N, H, W) bool, scores (N,))`` at the image's own size."""

    name = "segment-anything"

    def __init__(self, path: str, device: str) -> None:
        import torch
        from segment_anything.build_sam import _build_sam

        self.device = resolve_device(device)
        self.autocast = half_dtype(self.device) == torch.float16
        file = Path(path).expanduser()
        if not file.is_file():
            raise ToolError(f"--segmenter {path!r} does not exist; expected segment-anything's sam_vit_*.pth file")
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file
            raise ToolError(f"--segmenter {path!r} is not a readable SAM checkpoint ({brief(exc)})") from None
        sam = _build_sam(**architecture(state))
        sam.load_state_dict(state)
        self.model = sam.to(self.device).eval()
        self._lock = threading.Lock()

    def segment(self, image: Image.Image, boxes: np.ndarray | None,
                settings: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        import torch
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor

        pixels = np.asarray(image.convert("RGB"))
        with self._lock, torch.inference_mode(), torch.autocast("cuda", enabled=self.autocast):
            if boxes is None:
                found = SamAutomaticMaskGenerator(
                    self.model, points_per_side=settings["points_per_side"],
                    points_per_batch=settings["points_per_batch"], pred_iou_thresh=settings["pred_iou_thresh"],
                    stability_score_thresh=settings["stability_thresh"], box_nms_thresh=settings["nms_iou"],
                ).generate(pixels)
                found = sorted(found, key=lambda m: -m["predicted_iou"])[: 4 * settings["max_regions"]]
                if not found:
                    return np.zeros((0, *pixels.shape[:2]), dtype=bool), np.zeros(0)
                return (np.stack([m["segmentation"] for m in found]),
                        np.array([m["predicted_iou"] for m in found], dtype=float))
            predictor = SamPredictor(self.model)
            predictor.set_image(pixels)
            given = torch.as_tensor(boxes, dtype=torch.float, device=self.device)
            prompts = predictor.transform.apply_boxes_torch(given, pixels.shape[:2])
            masks, ious, _ = predictor.predict_torch(None, None, boxes=prompts, multimask_output=False)
        return masks[:, 0].cpu().numpy(), ious[:, 0].float().cpu().numpy()

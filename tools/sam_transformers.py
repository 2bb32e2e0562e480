"""SAM through transformers (``SamModel`` + ``SamProcessor``): a hub id such as ``facebook/sam-vit-base`` or a
folder. One image embedding per call, then box prompts (one mask each) or a point grid (SAM's three masks per
point, filtered by predicted IoU and stability, deduplicated by box NMS), decoded at SAM's low resolution and
upsampled only for the masks that survive."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from tools.detect import load_checkpoint
from tools.device import half_dtype, resolve_device
from tools.imports import lazy

sv = lazy("supervision")

SEGMENTER_CLASSES = {"sam": "SamModel"}  # config.model_type -> transformers class


def point_grid(size: tuple[int, int], n: int) -> np.ndarray:
    """``n x n`` prompt points at the centres of an even grid over an image of ``size = (width, height)``."""
    w, h = size
    c = (np.arange(n) + 0.5) / n
    return np.array([[x * w, y * h] for y in c for x in c], dtype=float)


def stability(logits: np.ndarray, offset: float = 1.0) -> np.ndarray:
    """SAM's stability score: area at logit > +offset over area at logit > -offset, per mask."""
    hi = (logits > offset).sum((-1, -2))
    lo = (logits > -offset).sum((-1, -2))
    return np.where(lo > 0, hi / np.maximum(lo, 1), 0.0)


class TransformersSam:
    """``segment(image, boxes)`` -> ``(masks (N, H, W) bool, scores (N,))`` at the image's own size."""

    name = "transformers"

    def __init__(self, model: str, device: str) -> None:
        self.processor, net = load_checkpoint(model, SEGMENTER_CLASSES, "--segmenter", "SAM segmenter")
        self.device = resolve_device(device)
        self.dtype = half_dtype(self.device)
        self.model = net.to(self.device, dtype=self.dtype).eval()
        pad = self.processor.image_processor.pad_size
        self.pad = (int(pad["height"]), int(pad["width"]))
        self._lock = threading.Lock()

    def segment(self, image: Image.Image, boxes: np.ndarray | None,
                settings: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        inputs = self.processor(images=image, return_tensors="pt")
        with self._lock, torch.inference_mode():
            emb = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device, self.dtype))
        resized = tuple(int(v) for v in inputs["reshaped_input_sizes"][0])
        if boxes is not None:
            logits, scores = self._decode(emb, resized, image.size, settings, boxes=np.asarray(boxes, float))
            return self._upsample(logits, image.size), scores
        logits, ious = self._decode(emb, resized, image.size, settings,
                                    points=point_grid(image.size, settings["points_per_side"]))
        good = (ious >= settings["pred_iou_thresh"]) & (stability(logits) >= settings["stability_thresh"]) \
            & (logits > 0).any((1, 2))
        logits, ious = logits[good], ious[good]
        if len(logits):
            keep = sv.box_non_max_suppression(np.c_[sv.mask_to_xyxy(logits > 0).astype(float), ious],
                                              iou_threshold=settings["nms_iou"])
            logits, ious = logits[keep], ious[keep]
        top = np.argsort(-ious, kind="stable")[: 4 * settings["max_regions"]]  # upsample only what can be kept
        return self._upsample(logits[top], image.size), ious[top]

    def _decode(self, emb: Any, resized: tuple[int, int], size: tuple[int, int], settings: dict[str, Any], *,
                points: np.ndarray | None = None, boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Low-resolution mask logits ``(N, h, w)`` (padding cropped) and predicted IoUs for point or box prompts
        given in pixels of an image of ``size``; points give SAM's three masks each."""
        import torch

        (rh, rw), (w, h) = resized, size
        prompts = points if points is not None else boxes
        scale = np.array([rw / w, rh / h] * (prompts.shape[1] // 2))
        logits, ious = [], []
        step = settings["points_per_batch"]
        for i in range(0, len(prompts), step):
            chunk = torch.as_tensor(prompts[i: i + step] * scale, dtype=self.dtype, device=self.device)[None]
            kwargs = ({"input_points": chunk[:, :, None, :],
                       "input_labels": torch.ones(chunk.shape[:2] + (1,), dtype=torch.long, device=self.device),
                       "multimask_output": True} if points is not None
                      else {"input_boxes": chunk, "multimask_output": False})
            with self._lock, torch.inference_mode():
                out = self.model(image_embeddings=emb, **kwargs)
            low = out.pred_masks[0].float()  # (prompts, masks per prompt, L, L) over the padded input
            lh, lw = round(rh * low.shape[-2] / self.pad[0]), round(rw * low.shape[-1] / self.pad[1])
            logits.append(low[..., :max(lh, 1), :max(lw, 1)].flatten(0, 1).cpu().numpy())
            ious.append(out.iou_scores[0].float().flatten().cpu().numpy())
        return np.concatenate(logits), np.concatenate(ious)

    @staticmethod
    def _upsample(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if not len(logits):
            return np.zeros((0, size[1], size[0]), dtype=bool)
        up = F.interpolate(torch.from_numpy(logits)[:, None], size=(size[1], size[0]), mode="bilinear",
                           align_corners=False)
        return (up[:, 0] > 0).numpy()

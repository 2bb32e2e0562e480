"""Patch feature extractors ("backbones") for the PatchCore memory bank, behind one small protocol.

- ``filters`` (the default): **hand-crafted, fixed multi-scale filters; no learned or downloaded weights.** On the
  grey image: Gabor energy (even/odd pair magnitude) at wavelengths 4, 8 and 16 px and 4 orientations; on each
  colour channel: a difference of Gaussians (σ 3 minus σ 12 px, so a stain shows against its own image's colour,
  whatever the product's overall colour); the local contrast (standard deviation in a σ 3 window). Each map is
  averaged over 8x8 px patches every 8 px and over a 3x3 neighbourhood of patches (PatchCore's local
  aggregation). Good for textures and surfaces; it knows nothing of objects.
- ``torchvision:NAME`` (e.g. ``torchvision:wide_resnet50_2``): the ImageNet backbone's layer2+layer3 features,
  as in the PatchCore paper, **only when its weights are already in the torch hub cache** (nothing is
  downloaded here: a missing file is a one-line error naming it).

``extract(image) -> (h, w, d)`` float32 patch features on a fixed grid; ``size`` is the side images are resized
to first, so every image gives the same grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from agent.core.errors import ConfigError
from tools.imports import lazy

cv2 = lazy("cv2")


class Backbone(Protocol):
    name: str
    size: int

    def extract(self, image: Image.Image) -> np.ndarray: ...


def _pool(maps: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """Mean over ``patch`` x ``patch`` windows every ``stride`` px, then over 3x3 neighbouring windows."""
    kernel = np.ones((patch, patch), np.uint8)
    k = np.concatenate([cv2.blur(maps, (patch, patch), borderType=cv2.BORDER_REFLECT),
                        cv2.dilate(maps, kernel, borderType=cv2.BORDER_REFLECT)], axis=-1)
    off = patch // 2
    grid = np.ascontiguousarray(k[off::stride, off::stride])
    return cv2.blur(grid, (3, 3), borderType=cv2.BORDER_REFLECT).reshape(grid.shape)


@dataclass
class FilterBackbone:
    """Fixed multi-scale filters (see the module docstring); deterministic, CPU, milliseconds per image."""

    size: int = 256
    wavelengths: tuple[float, ...] = (4.0, 8.0, 16.0)
    orientations: int = 4
    patch: int = 8
    stride: int = 8
    name: str = "filters"
    _kernels: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for lam in self.wavelengths:
            sigma = 0.56 * lam
            k = int(2 * round(2.5 * sigma) + 1)
            for i in range(self.orientations):
                theta = np.pi * i / self.orientations
                even = cv2.getGaborKernel((k, k), sigma, theta, lam, 1.0, 0, ktype=cv2.CV_32F)
                odd = cv2.getGaborKernel((k, k), sigma, theta, lam, 1.0, np.pi / 2, ktype=cv2.CV_32F)
                even -= even.mean()
                self._kernels.append((even / np.abs(even).sum(), odd / np.abs(odd).sum()))

    def extract(self, image: Image.Image) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB").resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255
        grey = rgb.mean(axis=2)
        maps = []
        for even, odd in self._kernels:
            e = cv2.filter2D(grey, -1, even, borderType=cv2.BORDER_REFLECT)
            o = cv2.filter2D(grey, -1, odd, borderType=cv2.BORDER_REFLECT)
            maps.append(np.sqrt(e * e + o * o))
        for c in range(3):
            ch = rgb[..., c]
            maps.append(cv2.GaussianBlur(ch, (0, 0), 3) - cv2.GaussianBlur(ch, (0, 0), 12))
        mean = cv2.GaussianBlur(grey, (0, 0), 3)
        maps.append(np.sqrt(np.maximum(cv2.GaussianBlur(grey * grey, (0, 0), 3) - mean * mean, 0)))
        return _pool(np.stack(maps, axis=-1).astype(np.float32), self.patch, self.stride)


@dataclass
class TorchvisionBackbone:
    """An ImageNet CNN's layer2 and layer3 (layer3 upsampled), 3x3-averaged, when its weights are cached."""

    arch: str
    size: int = 256
    device: str = "cpu"
    name: str = ""

    def __post_init__(self) -> None:
        import torch
        import torchvision

        self.name = f"torchvision:{self.arch}"
        try:
            weights = torchvision.models.get_model_weights(self.arch).DEFAULT
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"--backbone torchvision:{self.arch}: no such torchvision model ({exc})") from None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file():
            raise ConfigError(f"--backbone {self.name}: its weights are not in the torch hub cache ({cached}); "
                              "copy the file there, or use the offline default --backbone filters")
        model = torchvision.models.get_model(self.arch)
        model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
        self._model = model.eval().to(self.device)
        self._mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self._std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def extract(self, image: Image.Image) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        rgb = np.asarray(image.convert("RGB").resize((self.size, self.size), Image.BILINEAR), dtype=np.float32) / 255
        x = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - self._mean) / self._std
        m = self._model
        with torch.inference_mode():
            x = m.maxpool(m.relu(m.bn1(m.conv1(x.to(self.device)))))
            l2 = m.layer2(m.layer1(x))
            l3 = F.interpolate(m.layer3(l2), size=l2.shape[-2:], mode="bilinear", align_corners=False)
            f = F.avg_pool2d(torch.cat([l2, l3], 1), 3, 1, 1)
        return f[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def backbone(spec: str, size: int = 256, device: str = "cpu") -> Backbone:
    """The backbone ``spec`` names: ``filters`` (offline default) or ``torchvision:NAME``."""
    if spec == "filters":
        return FilterBackbone(size=size)
    if spec.startswith("torchvision:"):
        return TorchvisionBackbone(spec.partition(":")[2], size=size, device=device)
    raise ConfigError(f"anomaly backbone must be 'filters' or 'torchvision:NAME' (weights cached), found {spec!r}")

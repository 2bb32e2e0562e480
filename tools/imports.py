"""Heavy libraries imported on first use, so that listing, routing or reading a tool's declaration (``vqa --help``,
``vqa route``) never imports OpenCV: ``sv = lazy("supervision")`` at the top of a tool module, ``sv.Detections``
in its functions."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class lazy:  # noqa: N801  (used like a module)
    """A module imported on the first attribute read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _module(self) -> ModuleType:
        return importlib.import_module(self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._module(), attr)

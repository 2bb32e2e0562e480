"""vqa-orchestrator: multiple-choice VQA with tools, a router and a local Qwen-VL.

``from agent import Orchestrator`` is the Python API (``agent.api``); it is imported on first use, so importing
``agent`` stays light (no torch, transformers or langgraph).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent import moved

moved.install()  # old spellings (agent.schema ...) of the modules now in agent.core still import
if TYPE_CHECKING:
    from agent.api import Orchestrator

__all__ = ["Orchestrator", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Orchestrator":
        from agent.api import Orchestrator

        return Orchestrator
    if name == "__version__":
        from agent.rundir import package_version

        return package_version()
    raise AttributeError(f"module 'agent' has no attribute {name!r}")

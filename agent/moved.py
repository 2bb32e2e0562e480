"""Old module spellings that still import: ``agent.schema`` is ``agent.core.schema`` (the same module object), with
a ``DeprecationWarning`` naming the new spelling, so plug-ins written before the move keep working.

``agent/__init__.py`` puts ``ALIASES`` on ``sys.meta_path``; the project itself uses only the new spellings
(``tests/test_layers.py`` checks it).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED = {f"agent.{m}": f"agent.core.{m}" for m in (
    "adapter", "e5", "errors", "evidence", "fileio", "hub", "images", "paths", "probs", "redact", "schema",
    "support", "textsafe")} | {"tools.text": "agent.core.text", "tools.phrases": "agent.core.phrases"}


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the names in ``MOVED``; loading one puts the new module in ``sys.modules`` under the old name."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a placeholder, replaced in exec_module

    def exec_module(self, module: ModuleType) -> None:
        old, new = module.__name__, MOVED[module.__name__]
        warnings.warn(f"{old} moved to {new}: import it from there", DeprecationWarning, stacklevel=2)
        sys.modules[old] = importlib.import_module(new)  # the import system returns what sys.modules holds


ALIASES = _Aliases()


def install() -> None:
    """Put the aliases on ``sys.meta_path`` (once)."""
    if ALIASES not in sys.meta_path:
        sys.meta_path.append(ALIASES)

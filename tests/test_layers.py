"""Dependencies point one way: the imports of every project module (function-level ones included), parsed with
``ast``, have no cycle and keep the layers.

Layers, bottom up: the shared vocabulary ``agent.core`` (imports only itself) < tools < the orchestrator (the rest
of ``agent``) < eval < the front ends (``FRONT_ENDS``: the Python API ``agent.api``, the web UI ``agent.ui`` and the
CLI ``agent.cli``, which may use the API). Training (``agent.train``) sits beside inference: only training, eval
and the front ends import it. Lazy ``"module:Attr"`` strings (the tool, reasoner and SAM-backend registries,
evidence scorers) are imports that happen later: they are resolved and checked like any other import. The old
spellings of moved modules (``agent.moved``) are for plug-ins only: the project uses the new ones.
"""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest

from agent.moved import MOVED

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "tools", "prompts", "eval")
CORE = "agent.core"  # the shared vocabulary everyone may import, tools and plug-ins included
FRONT_ENDS = ("agent.api", "agent.ui", "agent.cli")

# Known violations being fixed in another lane, (importer, imported) -> who removes it. Remove an entry once its
# import is gone (the test says so).
ALLOWED: dict[tuple[str, str], str] = {
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (its longest importable prefix), or ``None`` outside the project."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (module level, functions, ``if`` blocks), except under
    ``if TYPE_CHECKING:`` (annotations only: never imported when the program runs)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.update(filter(None, [lazy_target(node.value, modules)]))
        elif isinstance(node, ast.Import):
            out.update(filter(None, (_resolve(a.name, modules) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:  # ``from pkg import module`` imports the module, ``from module import name`` it
                out.update(filter(None, [_resolve(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base,
                                                  modules)]))
    out.discard(name)
    return out


LAZY = re.compile(r"((?:agent|tools|prompts|eval)(?:\.\w+)*):[A-Za-z_][\w.]*")


def lazy_target(text: str, modules: dict[str, Path]) -> str | None:
    """The project module a lazy ``"module:Attr"`` string names (``None`` for any other string)."""
    match = LAZY.fullmatch(text)
    return match[1] if match and match[1] in modules else None


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    modules = project_modules(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(graph: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """``(importer, imported, rule)`` for every import that breaks a layer rule."""
    out = []
    for src, targets in graph.items():
        for dst in sorted(targets):
            if _in(dst, "eval") and not (_in(src, "eval") or _in(src, "agent.cli") or src == "agent.api"):
                out.append((src, dst, "only eval (and the front ends above it, agent.api and agent.cli) imports eval"))
            elif _in(dst, "agent.cli") and not _in(src, "agent.cli"):
                out.append((src, dst, "the CLI sits on top: only agent.cli imports agent.cli"))
            elif (any(_in(dst, f) for f in FRONT_ENDS) and not any(_in(src, f) for f in FRONT_ENDS)
                  and src != "agent"):  # the package's lazy facade: ``from agent import Orchestrator``
                out.append((src, dst, f"front ends {FRONT_ENDS} are imported only by front ends"))
            elif _in(dst, "agent.train") and not (_in(src, "agent.train") or _in(src, "eval")
                                                  or any(_in(src, f) for f in FRONT_ENDS)):
                out.append((src, dst, "inference never imports training: only agent.train, eval and the front ends "
                                      "import agent.train"))
            elif _in(src, CORE) and not _in(dst, CORE):
                out.append((src, dst, f"{CORE} (the shared vocabulary) imports only {CORE}"))
            elif (_in(src, "tools") or _in(src, "prompts")) and _in(dst, "agent") and not _in(dst, CORE):
                out.append((src, dst, f"tools and prompts import from agent only {CORE}"))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_the_parser_sees_the_project(graph: dict[str, set[str]]) -> None:
    """Guards against a vacuous pass: known imports, a function-level one included, are found."""
    assert {"agent.graph", "tools.detect", "eval.metrics", "prompts", "agent.cli"} <= set(graph)
    assert "tools.base" in graph["agent.services"]
    assert "agent.core.schema" in graph["prompts"]
    assert "agent.kb.build" in graph["agent.cli.kb"]
    assert {"tools.ocr", "tools.retrieve.tool"} <= graph["tools"]  # the registry's lazy "module:Class" strings
    assert "agent.core.support" in graph["agent.core.evidence"]  # a built-in evidence type's lazy scorer


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers(graph: dict[str, set[str]]) -> None:
    found = [v for v in violations(graph) if v[:2] not in ALLOWED]
    assert not found, "layering violations:\n" + "\n".join(f"{s} imports {d}: {why}" for s, d, why in found)


def test_the_allow_list_holds_only_live_exceptions(graph: dict[str, set[str]]) -> None:
    stale = [pair for pair in ALLOWED if pair[1] not in graph.get(pair[0], set())]
    assert not stale, f"{stale} no longer import each other: remove them from ALLOWED in tests/test_layers.py"


def test_the_core_holds_the_shared_vocabulary(graph: dict[str, set[str]]) -> None:
    assert set(MOVED.values()) <= set(graph), f"missing from {CORE}: {sorted(set(MOVED.values()) - set(graph))}"


def old_spellings(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``path:line name`` for every import (or lazy string) of a moved module's old spelling in the project."""
    found = []
    for path in project_modules(root, packages).values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) and not node.level
                     else [node.value.partition(":")[0]] if isinstance(node, ast.Constant) and isinstance(
                         node.value, str) and LAZY.fullmatch(node.value) else [])
            found += [f"{path.relative_to(root)}:{node.lineno} {n}" for n in names if n in MOVED]
    return found


def test_the_project_uses_the_new_spellings() -> None:
    found = old_spellings(ROOT)
    assert not found, "old module spellings (use agent.moved.MOVED's new ones):\n" + "\n".join(found)


def test_old_spellings_are_the_same_modules_with_a_warning() -> None:
    """A plug-in written before the move imports ``agent.schema`` and ``tools.text``: it gets the very modules
    (so its classes and isinstance checks agree with the project's) and a DeprecationWarning naming the new one."""
    import importlib
    import sys

    import agent.core.schema
    import agent.core.text

    for old, new in (("agent.schema", agent.core.schema), ("tools.text", agent.core.text)):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new.__name__}"):
            assert importlib.import_module(old) is new
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("agent.evidence", None)
        from agent.evidence import Evidence
    assert Evidence is sys.modules["agent.core.evidence"].Evidence
    assert agent.core.schema.__spec__.name == "agent.core.schema"  # the module itself is untouched


# ---------------------------------------------------------------- the checker itself, on a synthetic tree

def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def test_checker_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "agent/__init__.py": "",
        "agent/a.py": "from agent import b\n",
        "agent/b.py": "def f():\n    from .c import g\n",
        "agent/c.py": "import agent.a\n",
    })
    cycle = find_cycle(import_graph(tmp_path, ("agent",)))
    assert cycle is not None and {"agent.a", "agent.b", "agent.c"} <= set(cycle)


def test_checker_follows_lazy_module_strings_into_a_cycle(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "agent/__init__.py": "",
        "agent/core/evidence.py": 'SCORER = "agent.scoring:score"\nNOTE = "see agent.nothing:here, or a: b"\n',
        "agent/scoring.py": "from agent.core.schema import Question\n",
        "agent/core/schema.py": "from agent.core.evidence import SCORER\n",
    })
    graph = import_graph(tmp_path, ("agent",))
    assert graph["agent.core.evidence"] == {"agent.scoring"}  # a string naming no module is no edge
    cycle = find_cycle(graph)
    assert cycle is not None and {"agent.core.evidence", "agent.scoring", "agent.core.schema"} <= set(cycle)


def test_checker_reports_each_layer_rule(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "agent/__init__.py": "", "agent/core/schema.py": "", "agent/cli/__init__.py": "", "agent/graph.py": "",
        "agent/calibration.py": "def f():\n    from eval.metrics import nll\n",
        "agent/trace/__init__.py": "", "agent/trace/render.py": "from agent.cli import __init__\n",
        "agent/core/errors.py": "from agent.graph import x\n",
        "tools/__init__.py": "from agent.core.schema import Question\n",
        "tools/retrieve/__init__.py": "", "tools/retrieve/tool.py": "from agent.graph import Services\n",
        "eval/__init__.py": "", "eval/metrics.py": "",
        "prompts/__init__.py": "",
        "agent/api.py": "", "agent/distributed.py": "def f():\n    from agent.api import Orchestrator\n",
        "agent/train/__init__.py": "", "agent/train/manifest.py": "",
        "agent/reasoners/__init__.py": 'REGISTRY = {"qwen": "agent.reasoners.qwen:QwenBackend"}\n',
        "agent/reasoners/qwen.py": "from agent.train.manifest import check_adapter\n",
    })
    found = {(s, d) for s, d, _ in violations(import_graph(tmp_path))}
    assert found == {("agent.calibration", "eval.metrics"), ("agent.trace.render", "agent.cli"),
                     ("agent.core.errors", "agent.graph"), ("tools.retrieve.tool", "agent.graph"),
                     ("agent.distributed", "agent.api"), ("agent.reasoners.qwen", "agent.train.manifest")}

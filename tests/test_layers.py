"""Dependencies point one way: the imports of every project module (function-level ones included), parsed with
``ast``, have no cycle and keep the layers.

Layers, bottom up: the shared leaves (``SHARED_LEAVES``) < tools < the agent core < eval < the front ends
(``FRONT_ENDS``: the Python API ``agent.api``, the web UI ``agent.ui`` and the CLI ``agent.cli``, which may use
the API). Training (``agent.train``) sits beside inference: only training, eval and the front ends import it.
Lazy ``"module:Attr"`` strings (the tool, reasoner and SAM-backend registries, evidence scorers) are imports
that happen later: they are resolved and checked like any other import.
"""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "tools", "prompts", "eval")

# Modules everyone may import, tools included; they import nothing from the project but each other.
SHARED_LEAVES = frozenset({"agent.schema", "agent.evidence", "agent.errors", "agent.fileio", "agent.probs", "agent.e5",
                           "agent.hub", "agent.images",  # agent.images: the one safe reader of image files
                           "agent.support",  # how the built-in evidence types score options (their lazy scorers)
                           "tools.text", "tools.phrases"})  # pure text helpers (no project imports) the scorers use
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
            elif src in SHARED_LEAVES and dst not in SHARED_LEAVES:
                out.append((src, dst, f"a shared leaf imports only other shared leaves {sorted(SHARED_LEAVES)}"))
            elif (_in(src, "tools") or _in(src, "prompts")) and _in(dst, "agent") and dst not in SHARED_LEAVES:
                out.append((src, dst, f"tools and prompts import from agent only {sorted(SHARED_LEAVES)}"))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_the_parser_sees_the_project(graph: dict[str, set[str]]) -> None:
    """Guards against a vacuous pass: known imports, a function-level one included, are found."""
    assert {"agent.graph", "tools.detect", "eval.metrics", "prompts", "agent.cli"} <= set(graph)
    assert "tools.base" in graph["agent.services"]
    assert "agent.schema" in graph["prompts"]
    assert "agent.kb.build" in graph["agent.cli.kb"]
    assert {"tools.ocr", "tools.retrieve.tool"} <= graph["tools"]  # the registry's lazy "module:Class" strings
    assert "agent.support" in graph["agent.evidence"]  # a built-in evidence type's lazy scorer


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_layers(graph: dict[str, set[str]]) -> None:
    found = [v for v in violations(graph) if v[:2] not in ALLOWED]
    assert not found, "layering violations:\n" + "\n".join(f"{s} imports {d}: {why}" for s, d, why in found)


def test_the_allow_list_holds_only_live_exceptions(graph: dict[str, set[str]]) -> None:
    stale = [pair for pair in ALLOWED if pair[1] not in graph.get(pair[0], set())]
    assert not stale, f"{stale} no longer import each other: remove them from ALLOWED in tests/test_layers.py"


def test_shared_leaves_exist(graph: dict[str, set[str]]) -> None:
    assert SHARED_LEAVES <= set(graph), f"missing shared leaves: {sorted(SHARED_LEAVES - set(graph))}"


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
        "agent/evidence.py": 'SCORER = "agent.scoring:score"\nNOTE = "see agent.nothing:here, or a: b"\n',
        "agent/scoring.py": "from agent.schema import Question\n",
        "agent/schema.py": "from agent.evidence import SCORER\n",
    })
    graph = import_graph(tmp_path, ("agent",))
    assert graph["agent.evidence"] == {"agent.scoring"}  # a string naming no module is no edge
    cycle = find_cycle(graph)
    assert cycle is not None and {"agent.evidence", "agent.scoring", "agent.schema"} <= set(cycle)


def test_checker_reports_each_layer_rule(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "agent/__init__.py": "", "agent/schema.py": "", "agent/cli/__init__.py": "", "agent/graph.py": "",
        "agent/calibration.py": "def f():\n    from eval.metrics import nll\n",
        "agent/trace/__init__.py": "", "agent/trace/render.py": "from agent.cli import __init__\n",
        "agent/errors.py": "from agent.graph import x\n",
        "tools/__init__.py": "from agent.schema import Question\n",
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
                     ("agent.errors", "agent.graph"), ("tools.retrieve.tool", "agent.graph"),
                     ("agent.distributed", "agent.api"), ("agent.reasoners.qwen", "agent.train.manifest")}

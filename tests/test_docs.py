"""The documentation stays true: every repository path and every ``vqa`` command (with its flags) that README.md
and docs/*.md name exists, the drawn graph is the code's, the README stays short, and the generated reference
pages (agent/cli/docs.py) cover every command, setting and tool. ``make docs`` / ``make test`` build the site with
``mkdocs build --strict`` (broken links and anchors fail there)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from agent.cli import docs as gen

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TOP = ("agent", "tools", "eval", "tests", "examples", "prompts", "docs", ".ci")
PATH = re.compile(r"(?<![\w./$~-])((?:" + "|".join(map(re.escape, TOP)) + r")/[\w./*-]*|Makefile|pyproject\.toml|"
                  r"mkdocs\.yml)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")
MODULE = re.compile(r"python -m ((?:agent|tools|eval)(?:\.\w+)+)")


def command_tree() -> object:
    from agent.cli import app

    return typer.main.get_command(app)


def options(cmd: object) -> set[str]:
    out = {"--help"}
    for p in getattr(cmd, "params", []):
        out.update(getattr(p, "opts", []))
        out.update(getattr(p, "secondary_opts", []))
    return out


def task_options(words: list[str]) -> set[str]:
    """``vqa eval --task NAME``: the options of the eval command the tool ``NAME`` declares (they pass on)."""
    from tools import eval_tasks, import_spec

    name = words[words.index("--task") + 1] if "--task" in words[:-1] else None
    tasks = eval_tasks()
    if name not in tasks:
        return set()
    cli = typer.Typer()
    cli.command()(import_spec(tasks[name]))
    return options(typer.main.get_command(cli))


def vqa_calls(text: str) -> list[list[str]]:
    """The token lists after each ``vqa`` in shell text (continuation lines joined, comments dropped)."""
    calls = []
    for line in text.replace("\\\n", " ").splitlines():
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.commenters = "#"
            tokens = list(lex)
        except ValueError:  # an unbalanced quote in prose
            tokens = line.split()
        for i, tok in enumerate(tokens):
            if tok in ("vqa", "$(which vqa)") or tok.endswith("/vqa"):
                rest = []
                for t in tokens[i + 1:]:
                    if t in ("|", "||", "&&", ";", ">", "<", ">>", "&", "(", ")"):
                        break
                    rest.append(t)
                calls.append(rest)
    return calls


def check_call(tree: object, tokens: list[str]) -> list[str]:
    """What is wrong with ``vqa <tokens>``: an unknown command or an option the command does not take."""
    leaves = [tree]
    words = [t.strip("[]") for t in tokens]
    i = 0
    while i < len(words) and all(hasattr(c, "commands") for c in leaves):
        names = words[i].split("/")
        if not all(n in c.commands for c in leaves for n in names):
            if words[i].startswith("-") or not re.fullmatch(r"[a-z][a-z-]*(/[a-z-]+)*", words[i]):
                break
            return [f"vqa {' '.join(tokens[:i + 1])}: no such command"]
        leaves = [c.commands[n] for c in leaves for n in names]
        i += 1
    wrong = []
    extra = task_options(words)
    for w in words[i:]:
        flag = w.split("=", 1)[0]
        if re.fullmatch(r"--?[a-zA-Z][\w-]*", flag) and any(flag not in options(c) | extra for c in leaves):
            wrong.append(f"vqa {' '.join(tokens)}: {flag} is not an option of that command")
    return wrong


@pytest.fixture(scope="module")
def texts() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in PAGES}


def test_the_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= 300, f"README.md has {n} lines: move the reference into docs/"


def test_every_path_the_docs_name_exists(texts: dict[Path, str]) -> None:
    missing = []
    for page, text in texts.items():
        for found in PATH.findall(text):
            path = found.rstrip(".,:;'")
            if "*" in path:
                ok = any(ROOT.glob(path))
            else:
                ok = (ROOT / path).exists()
            if not ok:
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "named in the docs but not in the repository:\n" + "\n".join(missing)


def test_every_python_module_the_docs_run_exists(texts: dict[Path, str]) -> None:
    import importlib.util

    missing = [f"{p.relative_to(ROOT)}: python -m {m}" for p, t in texts.items() for m in MODULE.findall(t)
               if importlib.util.find_spec(m) is None]
    assert not missing, "\n".join(missing)


def test_every_vqa_command_and_flag_the_docs_show_exists(texts: dict[Path, str]) -> None:
    tree = command_tree()
    wrong, seen = [], 0
    for page, text in texts.items():
        snippets = FENCE.findall(text) + [s for s in INLINE.findall(text) if s.startswith("vqa ")]
        for snippet in snippets:
            for call in vqa_calls(snippet):
                seen += 1
                wrong += [f"{page.relative_to(ROOT)}: {w}" for w in check_call(tree, call)]
    assert seen > 100, f"only {seen} vqa commands found: the scanner is broken"
    assert not wrong, "the docs show commands or flags the CLI does not have:\n" + "\n".join(wrong)


def test_the_checker_catches_a_wrong_command_and_a_wrong_flag() -> None:
    tree = command_tree()
    assert check_call(tree, ["batch", "x.csv", "--images", "d", "--run-dir", "r"]) == []
    assert check_call(tree, ["batch/eval", "--ray", "local"]) == []
    assert check_call(tree, ["trace", "show", "runs/x", "--html", "t.html"]) == []
    assert check_call(tree, ["ask", "p.jpg", "Q?", "-c", "a", "--no-such-flag"]) == [
        "vqa ask p.jpg Q? -c a --no-such-flag: --no-such-flag is not an option of that command"]
    assert check_call(tree, ["kb", "explode", "kb/"]) == ["vqa kb explode: no such command"]
    assert vqa_calls('x && vqa eval a.csv --ablate  # comment --nope\nPYTHONPATH=p vqa ask i "q" -c a | jq') == [
        ["eval", "a.csv", "--ablate"], ["ask", "i", "q", "-c", "a"]]


def _mermaid(text: str) -> list[str]:
    return re.findall(r"^```mermaid\n(.*?)^```", text, re.S | re.M)


def test_the_drawn_graph_is_the_codes(texts: dict[Path, str]) -> None:
    """README.md and docs/architecture.md show the snapshot tests/test_graph.py compares with build_graph()."""
    snapshot = (ROOT / "tests" / "snapshots" / "graph.mmd").read_text(encoding="utf-8")
    for name in ("README.md", "docs/architecture.md"):
        drawn = _mermaid(texts[ROOT / name])
        assert drawn == [snapshot], f"{name}: the mermaid graph differs from tests/snapshots/graph.mmd; paste it again"


def test_the_generated_reference_covers_every_command_setting_and_tool() -> None:
    import tools
    from agent.config import Settings

    cli = gen.cli_markdown()
    tree = command_tree()

    def names(cmd: object, path: str) -> list[str]:
        subs = getattr(cmd, "commands", {})
        return [path] + [n for k, c in subs.items() for n in names(c, f"{path} {k}")]

    for path in names(tree, "vqa"):
        assert f"`{path}`" in cli, f"{path} missing from the CLI reference"
    assert "`--max-pixels <int>`" in cli
    config = gen.config_markdown()
    for key in Settings.model_fields:
        assert f"| `{key}` |" in config
    assert "| `max_pixels` | `int` | `1003520` | `--max-pixels` | `VQA_MAX_PIXELS` |" in config
    cards = gen.tools_markdown()
    for name in tools.tool_names():
        assert f"## `{name}`" in cards
    assert "| `box_threshold` | `0.35` |" in cards  # detect's constructor default, read from the class


def test_nav_pages_not_written_yet_are_left_out(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A")
    dropped: list[str] = []
    nav = [{"Home": "a.md"}, {"Later": "b.md"}, {"Group": [{"B": "b.md"}, {"Ref": "reference/cli.md"}]},
           {"Empty": [{"C": "c.md"}]}]
    assert gen._present(nav, tmp_path, dropped) == [{"Home": "a.md"}, {"Group": [{"Ref": "reference/cli.md"}]}]
    assert dropped == ["b.md", "b.md", "c.md"]

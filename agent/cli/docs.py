"""The reference pages of the documentation site, generated from the code (never written by hand).

- ``reference/cli.md``: Typer's own documentation generator (``typer agent.cli utils docs``) over the ``vqa`` app;
- ``reference/config.md``: every key of ``agent.config.Settings`` (type, default, the flag that sets it, its
  ``VQA_*`` variable and the comment beside the field);
- ``reference/tools.md``: the card of every registered tool, read from its class (nothing is loaded).

``mkdocs.yml`` names this file as a hook: ``on_files`` adds the three pages to the build, so ``mkdocs build`` (and
``make docs``) always documents the code it runs with. ``python -m agent.cli.docs OUT`` writes them to a folder.
"""

from __future__ import annotations

import inspect
import io
import subprocess
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

PAGES = ("reference/cli.md", "reference/config.md", "reference/tools.md")


def cli_markdown() -> str:
    """The ``vqa`` command reference, from Typer's documented ``typer MODULE utils docs`` generator."""
    done = subprocess.run([sys.executable, "-m", "typer", "agent.cli", "utils", "docs", "--name", "vqa"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"typer agent.cli utils docs failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    body = done.stdout.split("\n", 1)[1] if done.stdout.startswith("# ") else done.stdout
    return ("# CLI reference: `vqa`\n\n"
            "Generated from the Typer app (`agent/cli/`) by `typer agent.cli utils docs` on every docs build; "
            "`vqa COMMAND --help` prints the same.\n" + body)


def _field_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` -> ``{name: comment}`` from the class's source."""
    out: dict[str, str] = {}
    tokens = tokenize.generate_tokens(io.StringIO(inspect.getsource(cls)).readline)
    line_name: dict[int, str] = {}
    for tok in tokens:
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.start[0] not in line_name:
            line_name[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_name:
            out.setdefault(line_name[tok.start[0]], tok.string.lstrip("# ").strip())
    return out


def _flags() -> dict[str, Any]:
    """Setting name -> the command-line ``Flag`` that sets it (``agent.cli.common``: declared once per setting)."""
    from agent.cli.common import BY_SETTING

    return dict(BY_SETTING)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in typing.get_args(annotation))
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return f"`{text.replace('typing.', '').replace('pydantic.types.', '')}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_markdown() -> str:
    """Every settings key: where it can be set and what it does."""
    from agent.config import Settings

    comments = _field_comments(Settings)
    flags = _flags()
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if hasattr(default, "model_dump"):  # a table such as [tools]
            default = default.model_dump(by_alias=True)
        shown = "" if default is None else f"`{default!r}`".replace("'", '"')
        flag = flags.get(name)
        what = field.description or (flag.help if flag else comments.get(name, ""))
        flag = " ".join(f"`{d}`" for d in flag.decl.split("/")) if flag else ""
        rows.append(f"| `{name}` | {_type_name(field.annotation)} | {shown} | {flag} | `VQA_{name.upper()}` | "
                    f"{_cell(what)} |")
    return "\n".join([
        "# Configuration keys",
        "",
        "Generated from `agent.config.Settings` on every docs build. A setting comes from, in this order: the flag, "
        "the TOML file given with `--config` (the key, or its flag spelling with hyphens: `max-pixels`), the "
        "environment variable `VQA_<NAME>` (the API key also from `OPENAI_API_KEY`), the default. An unknown key "
        "in the file is an error that lists the valid ones.",
        "",
        "```toml",
        'reasoner = "qwen"',
        'model = "/models/Qwen3-VL-8B-Instruct"',
        "max-pixels = 1003520",
        "[ocr]                                # a tool's own settings, keyed like its constructor",
        'engine = "tesseract"',
        "[tools.register]                     # plug-in tools: name = \"module:Class\"",
        'mean_color = "mean_color:MeanColorTool"',
        "```",
        "",
        "| key | type | default | flag | environment | what |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ])


def _settings_of(cls: type) -> list[tuple[str, str]]:
    """The constructor's keyword settings of a tool class, with their defaults."""
    out = []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append((name, "" if p.default is p.empty else repr(p.default)))
    return out


def tools_markdown() -> str:
    """The card of every registered tool, read from its class attributes (no weights are loaded)."""
    import tools
    from tools.base import NoArgs

    lines = ["# Tool cards", "",
             "Generated from the tool classes of the registry (`tools/__init__.py`) on every docs build: what "
             "`--tools` accepts, what each tool says about itself, its settings (its constructor's keyword "
             "arguments: the TOML table `[NAME]` of `--config`) and the arguments a planner may pass. "
             "[Writing a tool](../plugins.md) explains the contract.", ""]
    for name in tools.tool_names():
        cls = tools.import_spec(tools.REGISTRY[name])
        lines += [f"## `{name}`", "", f"`{tools.REGISTRY[name]}` · evidence `{cls.evidence.__name__}` · version "
                  f"`{cls.version}`" + (f" · reads peers {', '.join(f'`{u}`' for u in cls.uses)}" if cls.uses else ""),
                  "", " ".join(str(cls.description).split()), "",
                  "**Limitations.** " + " ".join(str(cls.limitations).split()), ""]
        settings = _settings_of(cls)
        if settings:
            lines += ["| setting | default |", "| --- | --- |",
                      *(f"| `{k}` | {f'`{_cell(v)}`' if v else ''} |" for k, v in settings), ""]
        if cls.Args is not NoArgs:
            lines += ["Arguments a planner may pass: " + ", ".join(
                f"`{k}` ({_cell(f.description or _type_name(f.annotation))})"
                for k, f in cls.Args.model_fields.items()) + ".", ""]
        if cls.routing.keywords or cls.routing.examples:
            lines += ["Routing keywords: " + ", ".join(f"`{_cell(k)}`" for k in cls.routing.keywords) + "; "
                      "examples: " + "; ".join(f"“{e}”" for e in cls.routing.examples) + ".", ""]
    return "\n".join(lines)


GENERATORS = {"reference/cli.md": cli_markdown, "reference/config.md": config_markdown,
              "reference/tools.md": tools_markdown}


def _present(nav: Any, docs_dir: Path, dropped: list[str]) -> Any:
    """``nav`` without the pages that are neither in ``docs_dir`` nor generated here (sections left empty go too)."""
    if isinstance(nav, str):
        if nav in GENERATORS or (docs_dir / nav).is_file() or "://" in nav:
            return nav
        dropped.append(nav)
        return None
    if isinstance(nav, list):
        kept = [item for item in (_present(i, docs_dir, dropped) for i in nav) if item is not None]
        return kept or None
    if isinstance(nav, dict):
        kept = {k: v for k, v in ((k, _present(v, docs_dir, dropped)) for k, v in nav.items()) if v is not None}
        return kept or None
    return nav


def on_config(config: Any) -> Any:
    """mkdocs hook: leave out of the nav the pages not written yet (named in the log), so the nav may list them."""
    import logging

    dropped: list[str] = []
    if config.nav:
        config.nav = _present(config.nav, Path(config.docs_dir), dropped)
    if dropped:
        logging.getLogger("mkdocs.hooks.docs").info("pages in the nav but not in docs/, left out: %s",
                                                    ", ".join(dropped))
    return config


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated reference pages to the build."""
    from mkdocs.structure.files import File

    for path, make in GENERATORS.items():
        files.append(File.generated(config, path, content=make()))
    return files


def main(argv: list[str] | None = None) -> None:
    """``python -m agent.cli.docs OUT``: write the generated pages under ``OUT``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m agent.cli.docs OUT_FOLDER")
    for path, make in GENERATORS.items():
        target = Path(args[0]) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(make(), encoding="utf-8")
        print(target)


if __name__ == "__main__":
    main()

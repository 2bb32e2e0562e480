"""The ``vqa`` command line; each command lives in its own module and is registered here."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from agent.cli.ask import ask, route
from agent.cli.batch import batch
from agent.cli.chat import chat_cmd
from agent.cli.common import Opt, err, flags_as_flags
from agent.cli.dev import bench, dev
from agent.cli.eval import eval_cmd
from agent.cli.kb import kb_app
from agent.cli.trace import trace_app
from agent.cli.train import train_cmd
from agent.cli.ui import ui_cmd
from agent.errors import VqaError
from tools import tool_commands

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="Answer multiple-choice questions about images with tools and a local Qwen-VL.")
app.command()(ask)
app.command()(route)
app.command()(batch)
app.command()(bench)
app.command("chat")(chat_cmd)
app.command("eval", context_settings={"ignore_unknown_options": True})(eval_cmd)  # --task's options pass on
app.command("train")(train_cmd)
app.command("ui")(ui_cmd)
app.add_typer(trace_app, name="trace")
app.add_typer(kb_app, name="kb")
app.add_typer(dev, name="dev")
for _name, _cli in tool_commands().items():  # each tool's own commands (Tool.commands): vqa anomaly fit ...
    if isinstance(_cli, typer.Typer):
        app.add_typer(_cli, name=_name)
    else:
        app.command(_name)(_cli)


def _print_version(value: bool) -> None:
    if value:
        from agent.rundir import git_commit, package_version

        commit = git_commit()
        print(f"vqa-orchestrator {package_version()}" + (f" (git {commit})" if commit else ""))
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, Opt("--version", callback=_print_version, is_eager=True,
                                          help="Print the version (and git commit) and exit.")] = False) -> None:
    """Answer multiple-choice questions about images with tools and a local Qwen-VL."""


flags_as_flags(app)

def main() -> None:
    try:
        app()
    except VqaError as exc:
        err.print("[bold red]error:[/]", escape(str(exc)), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished questions are kept in the run directory; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()

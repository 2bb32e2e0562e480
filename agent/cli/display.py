"""Terminal rendering of answers and batch summaries (Rich). Only the CLI calls this.

Ids, questions, options and evidence are data, never Rich markup: they go into ``Text`` (an id like
``[/]R1[bold`` is shown as written), stripped of control characters and escape sequences (``agent.core.textsafe``).
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.core.schema import Answer, brief_error
from agent.core.textsafe import clean


def _text(value: str, **kwargs: object) -> Text:
    """Data for the terminal: control characters and escape sequences removed (``agent.core.textsafe``)."""
    return Text(clean(value), **kwargs)


def answer_panel(a: Answer) -> Panel:
    probs = Table.grid(padding=(0, 1))
    for letter, text in a.options.items():
        p = a.probs.get(letter, 0.0)
        mark = "➜" if letter == a.answer else " "
        bar = "█" * round(p * 20)
        probs.add_row(mark, f"{letter}.", _text(text), f"{p:6.1%}",
                      _text(bar, style="green" if letter == a.answer else "dim"))
    rows = [_text(a.question, style="bold"), probs]
    route = a.route.method if a.route else "?"
    planner = a.rounds[0].planner if a.rounds else "rules"
    rows.append(_text(f"tools: {', '.join(a.tools) or 'none'}   (planner: {planner}, route: {route})   "
                     f"method: {a.method}", style="cyan"))
    for t, why in (a.route.skipped if a.route else {}).items():
        rows.append(_text(f"  {t}: skipped, {brief_error(why)}", style="yellow"))
    if len(a.rounds) > 1 or planner != "rules":  # the planner's rounds: what each added and what it decided
        for r in a.rounds:
            calls = ", ".join(c.tool + ("" if c.ok else " (failed)") for c in r.calls) or "no tools"
            rows.append(_text(f"  round {r.index} ({r.why or r.planner}): {calls}"
                             + (f" → {r.answer} ({r.confidence:.0%})" if r.answer and r.confidence is not None
                                else ""), style="dim"))
    for r in a.evidence:
        rows.append(_text(f"  {r.tool}: {r.summary()}  [{r.seconds:.2f}s]"))
    for e in a.errors:
        rows.append(_text(f"error: {e}", style="red"))
    if a.flags:
        rows.append(_text(f"flags: {', '.join(a.flags)}", style="yellow"))
    if a.steps:  # wall clock: tools run in parallel, so per-node times do not add up
        total = max(s.started + s.seconds for s in a.steps) - min(s.started for s in a.steps)
        rows.append(_text(f"{total:.2f}s  (" + ", ".join(f"{k} {v:.2f}s" for k, v in a.timings.items()) + ")",
                         style="dim"))
    return Panel(Group(*rows), title=_text(f"{a.id}: {a.answer}", style="bold"), expand=False)


def print_batch_table(console: Console, answers: list[Answer]) -> None:
    t = Table(title="per question")
    for col in ("id", "answer", "p", "method", "tools", "evidence"):
        t.add_column(col, overflow="fold")
    for a in answers:
        ev = "; ".join(f"{r.tool}: {r.summary(3)}" for r in a.evidence) or "-"
        if a.errors:
            ev = (ev + "; " if ev != "-" else "") + "; ".join(a.errors)
        skipped = a.route.skipped if a.route else {}
        tools = ",".join(a.tools + [f"{t} (unavailable)" for t, why in skipped.items()
                                    if why.startswith("unavailable")]) or "-"
        t.add_row(_text(a.id), _text(a.answer), f"{a.probs.get(a.answer, 0.0):.2f}", _text(a.method), _text(tools),
                  _text(ev))
    console.print(t)

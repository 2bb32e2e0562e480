"""Terminal rendering of a question's trace as a Rich tree (``vqa trace show``)."""

from __future__ import annotations

from pathlib import Path

from agent.core.textsafe import clean
from agent.trace.events import TraceEvent
from agent.trace.read import QuestionView


def _probs_text(probs: dict[str, float], chosen: str | None = None) -> str:
    return "  ".join(f"{'[b]' if k == chosen else ''}{k} {p:.0%}{'[/b]' if k == chosen else ''}"
                     for k, p in probs.items())


def _tool_summary(e: TraceEvent) -> str:
    r = e.tool_result()
    if r is None:
        return "failed: " + str(e.error) if not e.ok else "evidence that does not validate"
    return r.summary(4)


def _calls(r: dict, failed_mark: str) -> str:
    """A round's tool calls on one line: ``ocr, detect ✗, som (cached)``."""
    return ", ".join(c["tool"] + ("" if c.get("ok", True) else failed_mark) + (" (cached)" if c.get("cached") else "")
                     for c in r.get("calls", []))


def escape(text: str) -> str:
    """Trace text as Rich markup data: markup escaped, control characters and escape sequences removed."""
    from rich.markup import escape as markup_escape

    return markup_escape(clean(text))


def _round_text(r: dict | None) -> str:
    """``round 2 (escalate: no evidence) ocr → `` for a reason event that closes a planner round."""
    if not r:
        return ""
    calls = _calls(r, " ✗") or "no tools"
    return f"[bold]round {r.get('index')}[/] ({escape(r.get('planner', ''))}: {escape(r.get('why') or '-')}) " \
           f"{escape(calls)} → "


def rounds_table(rounds: list[dict]):
    """The planner rounds of an answer as a Rich table: tools called, why, the answer and confidence after it."""
    from rich.table import Table

    t = Table(title="planner rounds", title_justify="left")
    for col in ("round", "planner", "why", "tools", "answer", "top", "margin", "s"):
        t.add_column(col)
    for r in rounds:
        calls = _calls(r, " (failed)") or "none"
        conf, margin = r.get("confidence"), r.get("margin")
        t.add_row(str(r.get("index")), escape(r.get("planner", "")), escape(r.get("why") or ""), escape(calls),
                  escape(r.get("answer") or "-"),
                  "-" if conf is None else f"{conf:.2f}", "-" if margin is None else f"{margin:.2f}",
                  f"{r.get('seconds', 0.0):.2f}")
    return t


def render_question(view: QuestionView):
    """A Rich tree: question → load_image, route → tools, reason (the round it closes), escalate → the tools it
    adds, reason again ... → answer, with start offsets and durations."""
    from rich.tree import Tree

    q, a = view.question, view.answer
    gold, letter = q.get("gold"), a.get("answer")
    verdict = "" if gold is None or letter is None else (" [green]✓[/]" if gold == letter else " [red]✗[/]")
    tags = " · ".join(f"{v}" for v in view.tags.values())
    head = (f"[bold]{escape(view.qid)}[/]{' · ' + escape(tags) if tags else ''} · answer [bold]{letter or '-'}[/]"
            f"{' · gold ' + gold if gold else ''}{verdict} · {view.seconds:.2f}s  [dim]{view.run}[/]")
    tree = Tree(head)
    if q:
        tree.add(escape(q.get("text", "")) + "  " + "  ".join(f"{k}. {escape(v)}" for k, v in
                                                                q.get("options", {}).items()), style="italic")
    t0 = view.start

    def line(e: TraceEvent, what: str) -> str:
        error = e.error or "failed"
        status = "" if e.ok else f"  [red]{escape(error if len(error) <= 240 else error[:237] + '...')}[/]"
        return f"[cyan]{e.label}[/]  [dim]+{e.start - t0:.2f}s[/] {e.seconds:.2f}s  {what}{status}"

    route_branch = tree
    for e in view.events:
        if e.kind == "node" and e.node == "load_image":
            o = e.outputs
            what = f"{Path(str(e.inputs.get('path', ''))).name} {o.get('original_size')} → {o.get('size')}" if o.get(
                "size") else ""
            tree.add(line(e, escape(what)))
        elif e.kind == "node" and e.node == "route":
            o = e.outputs
            skipped = "".join(f"  [yellow]{t} skipped[/]" for t in o.get("skipped", {}))
            route_branch = tree.add(line(e, f"tools: [bold]{', '.join(o.get('run', [])) or 'none'}[/] "
                                            f"(by {o.get('method', '?')}){skipped}"))
        elif e.kind == "node" and e.node == "run_tool":
            tag = "[magenta]cached[/] · " if e.cached else ""
            route_branch.add(line(e, tag + escape(_tool_summary(e)) if e.ok else ""))
        elif e.kind == "node" and e.node == "escalate":
            o = e.outputs
            route_branch = tree.add(line(e, f"[yellow]{escape(str(o.get('why') or ''))}[/] → add [bold]"
                                            f"{', '.join(o.get('add') or []) or 'none'}[/]"
                                            + (f"  [dim](then {', '.join(o['candidates'][1:])})[/]"
                                               if len(o.get("candidates") or []) > 1 else "")))
        elif e.kind == "node" and e.node == "reason":
            o = e.outputs
            node = tree.add(line(e, _round_text(o.get("round")) + f"{o.get('method', '')}  "
                                    f"{_probs_text(o.get('probs', {}))}"
                                    + (f"  [yellow]{', '.join(o.get('flags', []))}[/]" if o.get("flags") else "")))
            if o.get("prompt"):
                node.add(f"[dim]prompt: {len(o['prompt'])} chars: {escape(o['prompt'][:100])!s}…[/]")
        elif e.kind == "rotations":
            for r in e.outputs.get("rotations", []):
                tree.add(f"[cyan]rotation {r['shift']}[/]  order {''.join(r['order'])} → chose "
                         f"{r['chosen']}  {_probs_text(r['probs'])}")
        elif e.kind == "node" and e.node == "finish":
            node = tree.add(line(e, f"answer [bold]{a.get('answer')}[/] ({a.get('method')})"))
            if len(a.get("rounds") or []) > 1:
                node.add(rounds_table(a["rounds"]))
        elif e.kind == "error":
            tree.add(f"[red]error: {escape(e.error or '')}[/]")
        elif e.kind == "node":
            tree.add(line(e, ""))
    return tree

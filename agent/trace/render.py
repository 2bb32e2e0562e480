"""Terminal rendering of a question's trace as a Rich tree (``vqa trace show``)."""

from __future__ import annotations

from pathlib import Path

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


def render_question(view: QuestionView):
    """A Rich tree: question → load_image, route → tools, reason → answer, with start offsets and durations."""
    from rich.markup import escape
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
        elif e.kind == "node" and e.node == "reason":
            o = e.outputs
            node = tree.add(line(e, f"{o.get('method', '')}  {_probs_text(o.get('probs', {}))}"
                                    + (f"  [yellow]{', '.join(o.get('flags', []))}[/]" if o.get("flags") else "")))
            if o.get("prompt"):
                node.add(f"[dim]prompt: {len(o['prompt'])} chars: {escape(o['prompt'][:100])!s}…[/]")
        elif e.kind == "rotations":
            for r in e.outputs.get("rotations", []):
                tree.add(f"[cyan]rotation {r['shift']}[/]  order {''.join(r['order'])} → chose "
                         f"{r['chosen']}  {_probs_text(r['probs'])}")
        elif e.kind == "node" and e.node == "finish":
            tree.add(line(e, f"answer [bold]{a.get('answer')}[/] ({a.get('method')})"))
        elif e.kind == "error":
            tree.add(f"[red]error: {escape(e.error or '')}[/]")
        elif e.kind == "node":
            tree.add(line(e, ""))
    return tree

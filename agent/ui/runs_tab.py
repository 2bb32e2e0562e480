"""The Runs tab: open a run directory (``vqa batch``/``vqa eval`` with ``--run-dir``); a sortable table of its
questions with filters (wrong, failed, low confidence, by tool), one question's trace page, and the ablation
table and plot when the run has them."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from PIL import Image

from agent.ui import runs
from agent.ui.common import user_error

ANY = "any tool"


def _table(rows: list[runs.Row]) -> list[list]:
    return [r.cells() for r in rows]


def open_run(run_dir: str) -> tuple:
    try:
        rows = runs.load_run(Path(run_dir.strip()))
        table, header, plot = runs.ablation(Path(run_dir.strip()))
    except Exception as exc:  # noqa: BLE001 - one line in the page; every widget stays usable for the next path
        return ([], f"**error:** {user_error(exc).message}", [], gr.update(choices=[ANY], value=ANY),
                gr.update(choices=[], value=None), "", gr.update(visible=False), gr.update(value=[]), None)
    wrong = sum(r.correct == "no" for r in rows)
    graded = sum(bool(r.correct) for r in rows)
    summary = (f"**{len(rows)} questions** · {sum(bool(r.failed) for r in rows)} with a failure"
               + (f" · accuracy {1 - wrong / graded:.1%} ({graded - wrong}/{graded})" if graded else ""))
    with_plot = Image.open(plot).convert("RGB") if plot else None
    return (rows, summary, _table(rows), gr.update(choices=[ANY, *runs.tools_of(rows)], value=ANY),
            gr.update(choices=[r.id for r in rows], value=None), "",
            gr.update(visible=bool(table) or plot is not None), gr.update(value=table, headers=header or None),
            with_plot)


def apply_filters(rows: list[runs.Row] | None, wrong: bool, failed: bool, low: float, tool: str) -> tuple:
    shown = runs.filtered(rows or [], wrong=wrong, failed=failed, low=low if low > 0 else None,
                          tool=None if tool in (None, ANY) else tool)
    return _table(shown), gr.update(choices=[r.id for r in shown])


def show_trace(run_dir: str, qid: str | None) -> str:
    if not qid:
        return ""
    try:
        return runs.trace_page(Path(run_dir.strip()), qid)
    except Exception as exc:  # noqa: BLE001 - a run without a trace still shows its table
        return f"<p class='trace-missing'>no trace view: {user_error(exc).message}</p>"


def pick_row(evt: gr.SelectData) -> str | None:
    """The id of the table row that was clicked."""
    return evt.row_value[0] if evt.row_value else None


def build(run_dir: str = "") -> None:
    rows = gr.State([])
    with gr.Row():
        path = gr.Textbox(label="Run directory", value=run_dir, placeholder="runs/test", scale=4, elem_id="runs-dir")
        button = gr.Button("Open", variant="primary", scale=1, elem_id="runs-open")
    summary = gr.Markdown(elem_id="runs-summary")
    with gr.Row():
        wrong = gr.Checkbox(label="wrong only", elem_id="filter-wrong")
        failed = gr.Checkbox(label="failed only", elem_id="filter-failed")
        low = gr.Slider(0, 1, value=0, step=0.05, label="confidence below (0: off)", elem_id="filter-low")
        tool = gr.Dropdown([ANY], value=ANY, label="ran tool", elem_id="filter-tool")
    table = gr.Dataframe(headers=runs.COLUMNS, datatype=["str", "str", "str", "str", "number", "str", "str"],
                         interactive=False, wrap=True, max_height=420, elem_id="runs-table")
    qid = gr.Dropdown([], label="Question (or click a row)", elem_id="runs-question")
    trace = gr.HTML(elem_id="runs-trace")
    with gr.Accordion("Ablation", open=True, visible=False, elem_id="ablation") as ablation:
        ablation_table = gr.Dataframe(interactive=False, elem_id="ablation-table")
        ablation_plot = gr.Image(label="ablation.png", type="pil", interactive=False)
    for event in (button.click, path.submit):
        event(open_run, path, [rows, summary, table, tool, qid, trace, ablation, ablation_table, ablation_plot],
              api_visibility="private")
    filters = [rows, wrong, failed, low, tool]
    for control in (wrong, failed, low, tool):
        control.change(apply_filters, filters, [table, qid], api_visibility="private")
    table.select(pick_row, None, qid, api_visibility="private")
    qid.change(show_trace, [path, qid], trace, api_visibility="private")

"""The ``vqa ui`` app (Gradio Blocks): the Ask, Chat and Runs tabs over one loaded ``Orchestrator``.

Ask: a photo, a question and 2-5 options (one per line) -> the answer, a probability bar per option, the route
and why, every tool's evidence drawn where it is visual, retrieved neighbours, timings and the prompt. Its
handler is also the API endpoint ``/ask`` (image, question, options as newline-separated text -> the answer
record as JSON), so ``gradio_client`` can script it; the pictures are drawn by a second, private step.
A bad input or a failing tool is a one-line message in the page, never a traceback.
"""

from __future__ import annotations

import html
import itertools
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from agent.core.errors import VqaError
from agent.core.schema import Answer
from agent.ui import chat_tab, runs_tab, views
from agent.ui.common import MODEL, message, user_error


def parse_options(text: str) -> list[str]:
    """One option per non-empty line."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]



class AskHandler:
    """``/ask``: one question through the engine; each question keeps its files in its own folder of
    ``work_dir`` (the tools' pictures, the record, the trace)."""

    def __init__(self, engine: Any, work_dir: Path) -> None:
        self.engine, self.work_dir = engine, Path(work_dir)
        self._n, self._lock = itertools.count(1), threading.Lock()

    def __call__(self, image: str | None, question: str, options: str,
                 progress: gr.Progress = gr.Progress()) -> dict:  # noqa: B008 - Gradio's progress marker
        if not image:
            raise message("expected a photo: upload or paste one")
        opts = parse_options(options)
        if not 2 <= len(opts) <= 5:
            raise message(f"expected 2-5 options, one per line, found {len(opts)}")
        with self._lock:
            run_dir = self.work_dir / f"ask-{next(self._n):04d}"
        progress(0.1, desc="routing, running the tools, reasoning")
        try:
            answer = self.engine.ask(image, question, opts, run_dir=run_dir)
        except Exception as exc:  # noqa: BLE001 - shown as one line in the page
            raise user_error(exc) from None
        return answer.model_dump(mode="json")


def show_answer(image: str | None, record: dict | None, settings: Any, roots: list[Path]) -> tuple:
    """Everything the Ask tab shows of one record; a failed tool's one-line reason goes to a warning."""
    if not record:
        return ("", None, "", [], gr.update(visible=False), [], [], [], "")
    a = Answer.model_validate(record)
    photo = None
    if image:
        from agent.core.images import load_image

        try:  # the working copy the tools saw: their boxes are in its pixels
            photo = load_image(Path(image), max_pixels=settings.image_max_pixels).image
        except VqaError:
            photo = None
    failed = views.tool_failures(a)
    for line in failed:
        gr.Warning(html.escape(line))
    thumbs, rows = views.neighbours(a, roots)
    failures = "\n".join(f"- ⚠ {line}" for line in failed)
    return (views.verdict(a), views.probabilities(a), views.route_text(a) + ("\n\n" + failures if failures else ""),
            views.evidence_images(a, photo), gr.update(visible=bool(rows)), thumbs, rows, views.timings(a),
            a.prompt or "(no prompt: the evidence reasoner reads the tool evidence directly)")


def ask_tab(engine: Any, work_dir: Path, roots: list[Path]) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(type="filepath", label="Photo", sources=["upload", "clipboard"], height=360,
                             elem_id="ask-image")
            question = gr.Textbox(label="Question (Korean or English)", elem_id="ask-question",
                                  placeholder="간판에 적힌 가게 이름은?")
            options = gr.Textbox(label="Options: 2-5, one per line", lines=5, elem_id="ask-options",
                                 placeholder="행복분식\n김밥천국\n명동칼국수")
            button = gr.Button("Ask", variant="primary", elem_id="ask-button")
        with gr.Column(scale=3):
            verdict = gr.Markdown(elem_id="answer")
            probs = gr.Label(label="Probability per option", elem_id="probs", show_heading=False)
            route = gr.Markdown(elem_id="route")
            evidence = gr.Gallery(label="Evidence drawn by the tools", columns=2, height="auto", object_fit="contain",
                                  preview=False, elem_id="evidence")
            with gr.Accordion("Retrieved neighbours", open=True, visible=False, elem_id="neighbours") as near:
                thumbs = gr.Gallery(label="Neighbours", columns=4, height=200, object_fit="contain")
                near_table = gr.Dataframe(headers=["id", "kind", "score", "text", "answer"], interactive=False)
            steps = gr.Dataframe(headers=["step", "start", "seconds", "status"], label="Timings", interactive=False,
                                 elem_id="timings")
            with gr.Accordion("Prompt", open=False, elem_id="prompt-box"):
                prompt = gr.Textbox(show_label=False, lines=12, max_lines=40, elem_id="prompt")
            with gr.Accordion("Record (JSON)", open=False):
                record = gr.JSON(elem_id="record")
    handler = AskHandler(engine, work_dir)
    shown = [verdict, probs, route, evidence, near, thumbs, near_table, steps, prompt]
    (button.click(lambda: show_answer(None, None, None, []), None, shown, queue=False, api_visibility="private")
     .then(handler, [image, question, options], record, api_name="ask", concurrency_id=MODEL)
     .success(lambda img, rec: show_answer(img, rec, engine.settings, roots), [image, record],
              shown, api_visibility="private"))


def build_app(engine: Any, work_dir: Path, *, chat_db: Path, chat_flags: dict | None = None,
              run_dir: str = "") -> gr.Blocks:
    """The three tabs over ``engine`` (an ``Orchestrator``); files of Ask questions go under ``work_dir``, chat
    sessions into ``chat_db`` (the store of ``vqa chat``, started with ``chat_flags``: the settings flags without
    the API key, for ``vqa chat --resume``); ``run_dir`` pre-fills the Runs tab."""
    kb = getattr(engine.settings, "kb", None)
    roots = [Path(kb), Path(kb).parent] if kb else []
    with gr.Blocks(title="vqa-orchestrator") as app:
        gr.Markdown(f"## vqa-orchestrator · reasoner `{engine.settings.reasoner}` · planner "
                    f"`{getattr(engine.settings, 'planner', 'rules')}`")
        with gr.Tabs():
            with gr.Tab("Ask", id="ask"):
                ask_tab(engine, work_dir, roots + [Path.cwd()])
            with gr.Tab("Chat", id="chat"):
                chat_tab.build(engine, chat_db, chat_flags or {})
            with gr.Tab("Runs", id="runs"):
                runs_tab.build(run_dir)
    app.queue(default_concurrency_limit=1)
    return app

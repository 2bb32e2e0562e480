"""What the tabs share: the page's CSS, the reasoner's concurrency group and the one-line error for the page."""

from __future__ import annotations

import html
import logging

import gradio as gr
from pydantic import ValidationError

from agent.core.errors import VqaError
from agent.ui.views import first_line

log = logging.getLogger(__name__)

CSS = """
.gradio-container, .prose, textarea, input { font-family: "NanumGothic", "Noto Sans CJK KR", system-ui, sans-serif; }
#answer h3 { margin: 0 0 4px; font-size: 1.5em; }
"""
MODEL = "model"  # the concurrency group of everything that runs the reasoner: one question at a time


def message(text: str) -> gr.Error:
    """An error shown in the page as written (Gradio renders its message as HTML: escaped here)."""
    return gr.Error(html.escape(text), print_exception=False)


def user_error(exc: BaseException) -> gr.Error:
    """A one-line message for the page; the traceback of an unexpected error goes to the server log only."""
    if isinstance(exc, ValidationError):
        msg = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
    elif isinstance(exc, (VqaError, ValueError)):
        msg = str(exc)
    else:
        log.exception("internal error")
        msg = f"internal error: {type(exc).__name__}: {exc}"
    return message(first_line(msg) or type(exc).__name__)

"""The Chat tab: multi-turn questions about one image, kept in the session store of ``vqa chat``.

A message is a question, optionally followed by its options after ``|`` (``컵은 무슨 색? | 흰색 | 검은색``), as in
``vqa chat``. The first message starts a named session; picking a saved session (one started in the terminal
too) shows its turns and continues it. The photo is copied next to the store, named by its hash, so a session
still finds it after this server's temporary files are gone.
"""

from __future__ import annotations

import html
import shutil
import time
from pathlib import Path
from typing import Any

import gradio as gr

from agent.chat import parse_line
from agent.core.images import file_sha256
from agent.ui.common import MODEL, message, user_error
from agent.ui.views import first_line


def _messages(turns: list[dict]) -> list[dict[str, str]]:
    from agent.chat import shown_answer, shown_question

    out = []
    for t in turns:
        rec = t["record"]
        if t["failed"]:
            reply = f"no answer: {first_line('; '.join(rec['errors'])) or 'the reasoner gave none'}"
        elif t["options"]:
            reply = f"**{shown_answer(t)}** ({rec['probs'].get(t['answer'], 0.0):.0%})"
        else:
            reply = shown_answer(t)
        tools = ", ".join(rec["tools"]) or "none"
        failed = [f"{e['tool']} failed: {first_line(e.get('error'))}" for e in rec["evidence"] if not e["ok"]]
        flags = f" · {', '.join(rec['flags'])}" if rec.get("flags") else ""
        reply += f"  \n<small>tools: {html.escape(tools)} · {rec['method']}{html.escape(flags)}</small>"
        reply += "".join(f"  \n⚠ {html.escape(line)}" for line in failed)
        out += [{"role": "user", "content": shown_question(t)}, {"role": "assistant", "content": reply}]
    return out


def _stable_copy(image: str | Path, folder: Path) -> Path:
    """The photo copied into ``folder``, named by its content (a re-upload is the same file)."""
    dest = folder / (file_sha256(Path(image))[:16] + Path(image).suffix.lower())
    if not dest.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, dest)
    return dest


def images_dir(db: Path) -> Path:
    """Where the photos of the sessions in ``db`` are kept (served to the page)."""
    return Path(db).parent / "chat-images"


class ChatHandlers:
    def __init__(self, engine: Any, db: Path, images: Path, flags: dict) -> None:
        from agent.chat import ChatRuntime, ChatStore

        self.engine, self.images, self.flags = engine, images, flags
        self.store = ChatStore(db)
        self.runtime = ChatRuntime(engine.services())

    def open(self, name: str | None) -> tuple:
        state = self.store.state(name) if name else None
        if not state:
            return None, [], None
        image = state.get("image")
        shown = str(_stable_copy(image, self.images)) if image and Path(image).is_file() else None
        return name, _messages(state.get("turns", [])), shown

    def send(self, line: str, image: str | None, name: str | None) -> tuple:
        """Ask; an error keeps the conversation on the page (and the line in the box), with one error line under
        it, instead of replacing it."""
        try:
            return self._send(line, image, name)
        except gr.Error as exc:
            state = self.store.state(name) if name else None
            shown = _messages(state.get("turns", [])) if state else []
            note = {"role": "assistant", "content": f"⚠ error: {exc.message}"}
            return name, [*shown, note], line, gr.update(choices=self.store.sessions(), value=name)

    def _send(self, line: str, image: str | None, name: str | None) -> tuple:
        from agent.chat import ChatSession

        text, options = parse_line(line or "")
        if not text:
            raise message("expected a question (options after '|': What colour is the cup? | white | black)")
        if not options and self.engine.settings.reasoner == "evidence":
            raise message("the evidence reasoner answers multiple-choice questions only: add options after '|'")
        try:
            photo = _stable_copy(image, self.images) if image else None
            if name is None or self.store.state(name) is None:
                if photo is None:
                    raise message("expected a photo to talk about: upload one first")
                name = name or time.strftime("chat-%Y%m%d-%H%M%S")
                session = ChatSession(self.store, name, self.runtime)
                session.start(photo, self.flags, getattr(self.engine, "tools", None))
            else:
                session = ChatSession(self.store, name, self.runtime)
                current = session.state.get("image")
                if photo is not None and not (current and Path(current).is_file()
                                              and file_sha256(Path(current))[:16] == photo.stem):
                    session.update(image=str(photo))  # another photo: the same one (re-uploaded) keeps the history
            session.ask(text, options)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - one line in the page
            raise user_error(exc) from None
        return name, _messages(session.turns), "", gr.update(choices=self.store.sessions(), value=name)


def build(engine: Any, db: Path, flags: dict) -> None:
    h = ChatHandlers(engine, db, images_dir(db), flags)
    name = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(type="filepath", label="Photo", sources=["upload", "clipboard"], height=320,
                             elem_id="chat-image")
            sessions = gr.Dropdown(label=f"Saved sessions ({db})", choices=h.store.sessions(), value=None,
                                   elem_id="chat-sessions")
            new = gr.Button("New session", size="sm")
        with gr.Column(scale=3):
            chat = gr.Chatbot(label="Chat", height=460, elem_id="chat")
            message = gr.Textbox(label="Question | option | option ...", elem_id="chat-message",
                                 placeholder="컵은 무슨 색인가요? | 흰색 | 검은색 | 빨간색")
            send = gr.Button("Send", variant="primary", elem_id="chat-send")
    for event in (send.click, message.submit):
        event(h.send, [message, image, name], [name, chat, message, sessions], concurrency_id=MODEL,
              api_visibility="private")
    sessions.input(h.open, sessions, [name, chat, image], api_visibility="private")
    new.click(lambda: (None, [], None, gr.update(value=None)), None, [name, chat, image, sessions],
              api_visibility="private")

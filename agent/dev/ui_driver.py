"""Driving ``vqa ui`` in a real browser: start the server on a free port, open the system Chromium headless with
Playwright (never a downloaded browser), and the page actions the tests and ``make screenshots`` share.
Needs the ``ui`` and ``dev`` extras (gradio, playwright) and Chromium (``make system-deps``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ANSWER_TIMEOUT_MS = 420_000  # an OCR question on a busy 2-core CPU, the OCR weights loaded on first use


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise RuntimeError("expected the system Chromium (apt-get install chromium; make system-deps), found none")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(args: list[str], *, log: Path, env: Mapping[str, str] | None = None, timeout: float = 300) -> Iterator[str]:
    """``vqa ui ARGS`` on a free loopback port until the page answers; yields its URL, stops it on the way out."""
    port = free_port()
    cmd = [sys.executable, "-c", "from agent.cli import main; main()", "ui", "--port", str(port), *args]
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vqa ui exited with {proc.returncode}: {Path(log).read_text(encoding='utf-8')}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vqa ui did not answer at {url} within {timeout:.0f}s; log: {log}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def browser(width: int = 1400, height: int = 1100) -> Iterator[Any]:
    """A Playwright page in the system Chromium, headless."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b.new_page(viewport={"width": width, "height": height}, locale="ko-KR")
        finally:
            b.close()


def ask(page: Any, image: Path, question: str, options: list[str]) -> None:
    """Fill the Ask tab and wait for the answer and its pictures."""
    page.get_by_role("tab", name="Ask").click()
    page.locator("#ask-image input[type=file]").set_input_files(str(image))
    page.locator("#ask-question textarea").fill(question)
    page.locator("#ask-options textarea").fill("\n".join(options))
    earlier = page.locator("#answer h3").count()
    page.locator("#ask-button").click()
    if earlier:  # the page clears the last answer first
        page.locator("#answer h3").wait_for(state="detached", timeout=30_000)
    page.locator("#answer h3").wait_for(timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function("document.querySelector('#timings').innerText.includes('finish')", timeout=60_000)
    page.wait_for_function(IMAGES_DECODED, timeout=60_000)


IMAGES_DECODED = """() => [...document.querySelectorAll('#answer img, #probs img, #evidence img')]
    .every(i => i.complete && i.naturalWidth > 0)"""  # the answer's pictures are drawn (screenshots, tests)


def chat(page: Any, image: Path | None, message: str) -> None:
    """Send one chat message (uploading ``image`` first when given) and wait for its reply."""
    page.get_by_role("tab", name="Chat").click()
    if image is not None:
        page.locator("#chat-image input[type=file]").set_input_files(str(image))
    answered = page.locator("#chat .bot-row", has_text="tools:")  # a reply's last line: what ran (pending: "...")
    replies = answered.count()
    page.locator("#chat-message textarea").fill(message)
    page.locator("#chat-send").click()
    answered.nth(replies).wait_for(timeout=ANSWER_TIMEOUT_MS)


def open_run(page: Any, run_dir: Path, qid: str | None = None) -> None:
    """Open a run directory in the Runs tab; with ``qid``, show that question's trace."""
    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-dir textarea").fill(str(run_dir))
    page.locator("#runs-open").click()
    page.locator("#runs-summary strong").wait_for(timeout=60_000)
    if qid is not None:
        # the table renders after the summary (slow under load), and Gradio keeps hidden copies of its cells
        cell = page.locator("#runs-table").get_by_text(qid, exact=True).filter(visible=True).first
        cell.wait_for(state="visible", timeout=60_000)
        cell.click(timeout=60_000)
        page.frame_locator("#runs-trace iframe").locator(f'[data-qid="{qid}"]').wait_for(timeout=60_000)

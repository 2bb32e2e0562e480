"""``make screenshots``: a picture of each tab of ``vqa ui`` (evidence reasoner, offline) in ``docs/screenshots/``.

Answers a small run of ``examples/`` with ``vqa batch`` first (for the Runs tab), then drives the system
Chromium: Ask (a Korean OCR question on the shop sign), Chat (two turns) and Runs (that run, one trace open);
the PNGs are reduced to 256 colours.
Usage: ``python -m agent.dev.screenshots [OUT_DIR]``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from agent.dev import ui_driver as ui

EXAMPLES = ui.ROOT / "examples"
RUN_ROWS = ("OCR_027", "OCR_028", "OCR_029")  # OCR questions about the bus stop sign (Korean and English)


def small_run(work: Path) -> Path:
    lines = (EXAMPLES / "ocr_set.csv").read_text(encoding="utf-8").splitlines()
    csv = work / "small.csv"
    csv.write_text("\n".join([lines[0], *(ln for ln in lines if ln.startswith(RUN_ROWS))]) + "\n", encoding="utf-8")
    run = work / "run"
    subprocess.run([sys.executable, "-c", "from agent.cli import main; main()", "batch", str(csv), "--images",
                    str(EXAMPLES), "--run-dir", str(run), "--out", str(run / "submission.csv"), "--reasoner",
                    "evidence", "--tool-timeout", "600"], check=True, cwd=ui.ROOT)
    return run


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vqa-shots-") as tmp:
        work = Path(tmp)
        run = small_run(work)
        env = {"VQA_DATA_DIR": str(work / "data"), "HF_HUB_OFFLINE": "1"}
        with ui.serve(["--reasoner", "evidence", "--tool-timeout", "600", "--run-dir", str(work / "ui")], log=work / "ui.log", env=env) as url, \
                ui.browser() as page:
            page.goto(url)
            ui.ask(page, EXAMPLES / "images/shop_sign.jpg", "간판에 적힌 가게 이름은 무엇인가요?",
                   ["김밥천국", "행복분식", "명동칼국수", "서울식당"])
            page.screenshot(path=str(out / "ask.png"), full_page=True)
            ui.chat(page, EXAMPLES / "images/milk_label.jpg", "우유의 용량은 얼마인가요? | 500mL | 1000mL | 2L")
            ui.chat(page, None, "What grade is the raw milk? | 1등급 | 2등급 | 3등급")
            page.screenshot(path=str(out / "chat.png"), full_page=True)
            ui.open_run(page, run, "OCR_027")
            page.screenshot(path=str(out / "runs.png"), full_page=True)
    for p in sorted(out.glob("*.png")):
        shrink(p)
        print(f"{p} {p.stat().st_size // 1024} KB")


def shrink(path: Path) -> None:
    """256 colours, no dithering: a page of flat colours and one photo stays readable at a third of the bytes."""
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ui.ROOT / "docs" / "screenshots")

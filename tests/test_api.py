"""The Python API (``from agent import Orchestrator``): settings like the CLI's, images as paths, PIL images or
bytes, models loaded once, batch and eval with what produced them recorded, and a light ``import agent``."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import tools
from agent.api import Orchestrator, answer_schema, make_question
from agent.core.errors import ConfigError, ImageError, InputError
from tools import BUILTIN, Registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PHOTO = EXAMPLES / "images" / "coffee.jpg"
PLUGINS = EXAMPLES / "plugins"


def fresh_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter started in the repository, as a notebook would be."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **env})


@pytest.fixture
def mean_color(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config registering the shipped ``mean_color`` plug-in (fast, no weights); the tool registry is this
    test's own, so the registration does not leak into other tests."""
    monkeypatch.setattr(tools, "REGISTRY", Registry(BUILTIN))
    monkeypatch.syspath_prepend(str(PLUGINS))
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('reasoner = "evidence"\n[tools.register]\nmean_color = "mean_color:MeanColorTool"\n',
                   encoding="utf-8")
    return cfg


def red_square(size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, (210, 20, 30))


def load_size(answer) -> list[int]:
    """The size of the image the graph loaded, from its ``load_image`` step."""
    return next(s.detail["original_size"] for s in answer.steps if s.node == "load_image")


def test_importing_agent_imports_no_model_library() -> None:
    p = fresh_python("import sys, agent\nfrom agent import Orchestrator\n"
                     "print(sorted(m for m in ('torch', 'transformers', 'langgraph', 'cv2') if m in sys.modules))\n"
                     "print(Orchestrator.__module__, agent.__version__)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["[]", "agent.api 0.1.0"]


def test_three_lines_in_a_fresh_python_answer_a_question() -> None:
    p = fresh_python("from agent import Orchestrator\n"
                     "vqa = Orchestrator(reasoner='evidence', tools='none')\n"
                     f"print(vqa.ask({str(PHOTO)!r}, 'What is in the cup?', ['tea', 'coffee']).model_dump_json())")
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["method"] == "evidence" and record["options"] == {"a": "tea", "b": "coffee"}
    assert record["answer"] in ("a", "b") and record["errors"] == []


def test_a_path_a_pil_image_and_bytes_reach_the_graph_alike(mean_color: Path) -> None:
    img = red_square()
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    with Orchestrator(config=mean_color, tools="mean_color") as vqa:
        answers = [vqa.ask(image, "What colour is it?", {"a": "blue", "b": "red"})
                   for image in (PHOTO, img, buf.getvalue(), bytearray(buf.getvalue()))]
    photo, *made = answers
    assert load_size(photo) == [600, 400] and all(load_size(a) == [64, 48] for a in made)
    for a in made:  # the colour tool saw the red picture and the model-free reasoner followed it
        assert a.tools == ["mean_color"] and a.evidence[0].ok, a.evidence
        assert a.answer == "b" and a.probs["b"] > a.probs["a"] and not a.failed


def test_the_reasoner_is_loaded_once_for_every_call(mean_color: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.reasoners as reasoners

    loads = []
    real = reasoners.load_reasoner
    monkeypatch.setattr(reasoners, "load_reasoner", lambda *a, **k: loads.append(a) or real(*a, **k))
    vqa = Orchestrator(config=mean_color)
    first = vqa.ask(red_square(), "What colour is it?", ["red", "blue"], tools=["mean_color"])
    vqa.ask(PHOTO, "What is in the cup?", ["tea", "coffee"], run_dir=tmp_path / "one")
    summary = vqa.batch(EXAMPLES / "test.csv", EXAMPLES, tmp_path / "run", tmp_path / "sub.csv", tools="none",
                        limit=2)
    reasoner = vqa.services().reasoner
    assert vqa.services(tmp_path / "x").reasoner is reasoner
    vqa.close()
    assert loads == [("evidence",)] and first.answer == "a" and summary.rows == 2
    with pytest.raises(ConfigError, match="closed"):
        vqa.ask(PHOTO, "Q?", ["x", "y"])


def test_close_removes_the_images_saved_without_a_run_directory() -> None:
    tmp = Path(os.environ["TMPDIR"])  # this test's own (conftest)
    with Orchestrator(reasoner="evidence", tools="none") as vqa:
        vqa.ask(red_square(), "Q?", ["x", "y"])
        saved = list(tmp.glob("vqa-ask-*/*.img"))
        assert len(saved) == 1 and Image.open(saved[0]).size == (64, 48)
    assert not list(tmp.glob("vqa-ask-*"))


def test_ask_with_a_run_directory_keeps_the_record_the_image_and_what_produced_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Orchestrator(reasoner="evidence", tools="none", command="notebook") as vqa:
        a = vqa.ask(_png(red_square()), "Q?", ["x", "y"], run_dir=run, id="q1")
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["q1"] and records[0]["answer"] == a.answer
    assert len(list((run / "inputs").glob("*.img"))) == 1 and (run / "trace.jsonl").stat().st_size > 0
    made = json.loads((run / "run.json").read_text())
    assert made["reasoner"] == "evidence" and made["tools"] == []
    assert made["provenance"]["command"] == "notebook" and made["provenance"]["version"] == "0.1.0"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("options", "needle"), [
    (["only"], "expected 2-5 options, found 1"),
    (["a", "b", "c", "d", "e", "f"], "expected 2-5 options, found 6"),
    ({"a": "x", "c": "y"}, "options must be keyed ['a', 'b']"),
    (["x", " "], "options ['b'] are empty"),
    ("x\ny", "as a list or a {letter: text} dict"),
])
def test_bad_options_are_one_line_input_errors(options, needle: str) -> None:
    with pytest.raises(InputError) as exc:
        make_question("Q?", options)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_bad_images_and_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'max_pixel'"):
        Orchestrator(reasoner="evidence", max_pixel=3)
    with pytest.raises(ConfigError, match="unknown tool"):
        Orchestrator(reasoner="evidence", tools="ocr,magic")
    with pytest.raises(ConfigError, match="not both"):
        Orchestrator(reasoner="evidence", settings=Orchestrator(reasoner="evidence").settings)
    with Orchestrator(reasoner="evidence") as vqa:
        with pytest.raises(ImageError, match="does not exist"):
            vqa.ask(tmp_path / "missing.jpg", "Q?", ["x", "y"])
        with pytest.raises(InputError, match="found int"):
            vqa.ask(3, "Q?", ["x", "y"])
        bad = vqa.ask(b"not an image", "Q?", ["x", "y"])  # like a corrupt file in a batch: a fallback answer
    assert bad.failed and bad.answer == "a" and "image" in bad.errors[0]


def test_settings_come_from_names_then_the_config_file_then_the_environment(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "vqa.toml"
    cfg.write_text('reasoner = "evidence"\nmax-pixels = 5000\nbatch_size = 3\n', encoding="utf-8")
    monkeypatch.setenv("VQA_BATCH_SIZE", "7")
    monkeypatch.setenv("VQA_TOOL_TIMEOUT", "9")
    s = Orchestrator(config=cfg, max_pixels=6000).settings
    assert (s.reasoner, s.max_pixels, s.batch_size, s.tool_timeout) == ("evidence", 6000, 3, 9.0)


def test_seed_seeds_random_and_numpy_when_loaded() -> None:
    import numpy as np

    Orchestrator(reasoner="evidence", seed=11).load().close()
    got = (random.random(), float(np.random.random()))
    random.seed(11)
    np.random.seed(11)
    assert got == (random.random(), float(np.random.random()))


def test_batch_limit_resume_and_what_produced_the_run(tmp_path: Path) -> None:
    run, sub = tmp_path / "run", tmp_path / "sub.csv"
    seen: list[int] = []
    with Orchestrator(reasoner="evidence", tools="none", seed=5, command="vqa batch ...") as vqa:
        s = vqa.batch(EXAMPLES / "test.csv", EXAMPLES, run, sub, limit=3, on_start=seen.append)
        again = vqa.batch(EXAMPLES / "test.csv", EXAMPLES, run, sub, limit=4)
    assert seen == [3] and (s.rows, s.answered, s.skipped, len(s.answers)) == (3, 3, 0, 3)
    assert (again.rows, again.skipped, again.new) == (4, 3, 1)  # resumed: only the fourth row is new
    rows = list(csv.DictReader(open(sub, encoding="utf-8")))
    assert [r["id"] for r in rows] == ["TEST_000", "TEST_001", "TEST_002", "TEST_003"]
    assert [a.id for a in again.answers] == [r["id"] for r in rows]
    made = json.loads((run / "run.json").read_text())
    assert (made["reasoner"], made["tools"], made["model"]) == ("evidence", [], "Qwen/Qwen3-VL-8B-Instruct")
    p = made["provenance"]
    assert (p["seed"], p["limit"], p["command"], p["package"]) == (5, 4, "vqa batch ...", "vqa-orchestrator")
    assert p["planner"]["planner"] == "rules" and "prompts" in made and p["libraries"]["pydantic"]
    assert p["git_commit"] is None or len(p["git_commit"].removesuffix("+dirty")) == 40


def test_a_changed_provenance_resumes_but_a_changed_identity_refuses(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Orchestrator(reasoner="evidence", tools="none", seed=1) as vqa:
        vqa.batch(EXAMPLES / "test.csv", EXAMPLES, run, tmp_path / "a.csv", limit=2)
    with Orchestrator(reasoner="evidence", tools="none", seed=2) as vqa:  # seed: recorded, never compared
        assert vqa.batch(EXAMPLES / "test.csv", EXAMPLES, run, tmp_path / "a.csv", limit=2).skipped == 2
        with pytest.raises(ConfigError, match="other settings"):
            vqa.batch(EXAMPLES / "test.csv", EXAMPLES, run, tmp_path / "a.csv", tools="all", limit=2)


def labelled_csv(path: Path, n: int) -> Path:
    """``n`` labelled questions the router sends to no tool (so no OCR or detector runs)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "question", "a", "b", "c", "d", "answer"])
        w.writerows([f"q{i}", "images/coffee.jpg", "Is this a photo?", "yes", "no", "", "", "ab"[i % 2]]
                    for i in range(n))
    return path


def test_eval_records_identity_and_provenance_in_metrics_json(tmp_path: Path) -> None:
    arms: list[str] = []
    with Orchestrator(reasoner="evidence", command="vqa eval ...") as vqa:
        m = vqa.eval(labelled_csv(tmp_path / "l.csv", 5), EXAMPLES, tmp_path / "run", ablate=True, ablate_tools="none",
                     limit=3, on_arm=arms.append)
    assert m.n == 3 and arms[0] == "router" and len(arms) > 1
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["identity"]["reasoner"] == "evidence" and written["identity"]["tools"] is None
    assert written["provenance"]["limit"] == 3 and written["provenance"]["command"] == "vqa eval ..."
    assert json.loads((tmp_path / "run" / "run.json").read_text())["provenance"]["limit"] == 3


def test_the_published_answer_schema_is_current_and_real_records_meet_it(mean_color: Path, tmp_path: Path) -> None:
    import jsonschema

    published = ROOT / "docs" / "answer.schema.json"
    assert published.read_text(encoding="utf-8") == answer_schema(), "refresh it: vqa dev schema"
    schema = json.loads(published.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    with Orchestrator(config=mean_color, tools="mean_color") as vqa:
        answers = [vqa.ask(red_square(), "What colour is it?", ["blue", "red"]), vqa.ask(b"junk", "Q?", ["x", "y"])]
    for a in answers:  # one with a plug-in's evidence, one fallback
        jsonschema.validate(json.loads(a.model_dump_json()), schema)
    broken = {**json.loads(answers[0].model_dump_json()), "probs": "high"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)

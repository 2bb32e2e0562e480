"""``vqa dev``: developer utilities (tiny random-weight checkpoints and the sign photos, llama.cpp serving, the answer
schema, training and scoring the router)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.common import AsJson, Opt, fail, out

dev = typer.Typer(no_args_is_help=True, help="Developer utilities.")


@dev.command("schema")
def schema_cmd(
    path: Annotated[Path, Opt("--out", help="Where the schema goes.")] = Path("docs/answer.schema.json"),
    check: Annotated[bool, Opt("--check", help="Write nothing; exit 1 when the file is not the current schema.")] = False,
) -> None:
    """Write the JSON Schema of the answer record (vqa ask --json, results.jsonl, the Python API's Answer)."""
    from agent.api import answer_schema

    text = answer_schema()
    if check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            fail(f"{path} is {'missing' if current is None else 'out of date'}; write it with: vqa dev schema --out "
                 f"{path}", code=1)
        out.print(f"{path} is current")
        return
    if not path.parent.is_dir():
        fail(f"--out {path}: folder {path.parent} does not exist; create it first (mkdir -p {path.parent})")
    path.write_text(text, encoding="utf-8")
    out.print(f"wrote {path}")


@dev.command("make-tiny")
def make_tiny_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the checkpoints into.")],
    vocab_gguf: Annotated[Optional[Path], Opt("--vocab-gguf", help="Qwen2's vocabulary as llama.cpp's "
                                              "ggml-vocab-qwen2.gguf (default: fetched once from the package index "
                                              "with pip, in llama-cpp-python's source, and cached).")] = None,
    favour_letters: Annotated[bool, Opt("--favour-letters", help="The Qwen2.5-VL's next token favours the option "
                                        "letters a-d (which one still depends on the prompt and photo): a random "
                                        "model whose answer a server's top logprobs contain; the model `vqa dev "
                                        "serve-tiny` serves.")] = False,
) -> None:
    """Write tiny random-weight checkpoints for every model role (useless for answers; for tests and smoke runs)."""
    from agent.dev.tiny import make_tiny

    for role, path in make_tiny(out_dir, vocab_gguf=vocab_gguf, favour=favour_letters).items():
        out.print(f"{role}: {path}")


@dev.command("make-signs")
def make_signs_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the photos and the two JSON files into.")],
    dialogs: Annotated[int, Opt("--dialogs", min=1, help="Sign photos (one dialog of two rounds each).")] = 20,
) -> None:
    """Write a VisDial-format set of sign photos whose answers are written in them.

    The check that ranking through the tools works, with real OCR and no model (docs/visdial.md)."""
    from agent.visdial.signs import make_signs

    for path in make_signs(out_dir, dialogs):
        out.print(str(path), highlight=False)


@dev.command("serve-tiny")
def serve_tiny_cmd(
    tiny: Annotated[Path, typer.Argument(help="A folder for the served model: DIR/served/vlm-qwen2.5-vl is made "
                                         "there when missing (`make-tiny --favour-letters`).")],
    port: Annotated[int, Opt("--port", min=1, max=65535)] = 8080,
    host: Annotated[str, Opt("--host")] = "127.0.0.1",
    vocab_gguf: Annotated[Optional[Path], Opt("--vocab-gguf", help="As for make-tiny, when the model is made.")] = None,
) -> None:
    """Serve the tiny Qwen2.5-VL with favoured letters with llama.cpp (llama-cpp-python's OpenAI-compatible server)
    after converting it with llama.cpp's own converter (the GGUF files are cached by the checkpoint's hash); try it
    with `vqa ask --backend openai --base-url http://HOST:PORT/v1 --model vlm-qwen2.5-vl`. Random weights: answers
    are noise; the protocol is real."""
    import os
    import sys

    from agent.dev.llamacpp import SERVED_ROLE, convert, server_command
    from agent.dev.tiny import make_tiny

    model = tiny / "served" / SERVED_ROLE
    if not (model / "model.safetensors").is_file():
        make_tiny(model.parent, [SERVED_ROLE], vocab_gguf=vocab_gguf, favour=True)
    text, mmproj = convert(model)
    cmd = server_command(text, mmproj, host=host, port=port, alias=SERVED_ROLE)
    out.print(f"serving {SERVED_ROLE} at http://{host}:{port}/v1 (llama.cpp; Ctrl-C stops)", highlight=False)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)  # the server takes this process's place: its signals and exit status are the command's


@dev.command("train-router")
def train_router_cmd(
    bank: Annotated[Optional[Path], Opt("--bank", help="Question bank JSONL (default: the shipped one).")] = None,
    out_path: Annotated[Optional[Path], Opt("--out", help="Where to write the model (default: the shipped file, "
                                            "agent/routing/data/router.npz).")] = None,
    as_json: AsJson = False,
) -> None:
    """Train the learned router on the bank's train split (settings and thresholds chosen on val); test is not read."""
    from agent.router import e5_query
    from agent.routing.bank import load_bank
    from agent.routing.model import default_model
    from agent.routing.train import train

    model, report = train(load_bank(bank), e5_query)
    target = out_path or default_model()
    model.save(target)
    report["out"] = str(target)
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
        return
    out.print(f"trained on {report['n_train']} train + {report['n_val']} val questions in {report['seconds']} s; "
              f"C={report['C']}, feature gain {report['gain']}")
    out.print("thresholds: " + ", ".join(f"{t} {v:.2f}" for t, v in report["thresholds"].items()))
    out.print(f"validation (tuned there, so optimistic): log-loss {report['val']['log_loss']:.4f}, "
              f"exact-set {report['val']['exact']:.3f}, micro-F1 {report['val']['micro_f1']:.3f}", soft_wrap=True)
    out.print(f"wrote {target}")


@dev.command("eval-router")
def eval_router_cmd(
    split_name: Annotated[str, Opt("--split", help="What to score: test (the held-out set, heldout_v2.jsonl), or the "
                                   "bank's val or train split.")] = "test",
    bank: Annotated[Optional[Path], Opt("--bank", help="Questions JSONL (default: the held-out set for test, the "
                                        "shipped bank for val and train).")] = None,
    model: Annotated[Optional[Path], Opt("--model", help="Router model .npz (default: the shipped one).")] = None,
    as_json: AsJson = False,
) -> None:
    """Exact-set accuracy, per-tool precision/recall/F1 and micro-F1 with 95% intervals, and routing time."""
    from agent.routing.bank import SPLITS
    from eval.router import format_report, run

    if split_name not in SPLITS:
        fail(f"--split: expected one of {', '.join(SPLITS)}, found {split_name!r}")
    res = run(split_name, bank, model)
    if as_json:
        print(json.dumps(res, ensure_ascii=False))
    else:
        out.print(format_report(res, f"router on the {split_name} split"), highlight=False, soft_wrap=True)

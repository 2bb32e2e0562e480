"""llama.cpp's own files for the tiny checkpoints and ``vqa dev serve-tiny``: the Qwen2 vocabulary, its tokenizer test
cases and the Hugging Face → GGUF converter.

They ship in llama.cpp's source tree, which the package index carries inside the ``llama-cpp-python`` source
distribution (``vendor/llama.cpp``). ``source_dir()`` downloads that archive once with pip (the version is pinned,
so every build sees the same vocabulary), keeps only the few files used here in a cache folder and works offline
after: ``$VQA_CACHE_DIR``, else ``$XDG_CACHE_HOME/vqa``, else ``~/.cache/vqa``.

``qwen2_vocab(gguf)`` reads the vocabulary-only GGUF (``tokenizer.ggml.tokens``/``merges``) with the ``gguf``
package and caches it as ``vocab.json`` + ``merges.txt`` keyed by the file's hash: reading 450k GGUF array items
takes the ``gguf`` reader tens of seconds, the cached files load in about one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from agent.core.errors import ConfigError

LLAMA_CPP_PYTHON = "0.3.36"  # the llama-cpp-python release whose vendored llama.cpp the files come from
PREFIX = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
VOCAB = "models/ggml-vocab-qwen2.gguf"
MEMBERS = (VOCAB, VOCAB + ".inp", VOCAB + ".out", "convert_hf_to_gguf.py", "conversion/", "gguf-py/")
REAL_TOKENS = 151643  # ordinary BPE tokens of the Qwen2 vocabulary; added tokens start at this id


def cache_root() -> Path:
    if os.environ.get("VQA_CACHE_DIR"):
        return Path(os.environ["VQA_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vqa"


def _publish(tmp: Path, dest: Path) -> Path:
    """Move a finished ``tmp`` folder to ``dest`` in one step; a concurrent writer that got there first wins."""
    try:
        os.rename(tmp, dest)
    except OSError:
        if not dest.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def source_dir() -> Path:
    """The cached slice of llama.cpp's source tree (``models/ggml-vocab-qwen2.gguf*``, the converter), fetched once."""
    dest = cache_root() / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (dest / VOCAB).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet", "--dest", tmp,
               f"llama-cpp-python=={LLAMA_CPP_PYTHON}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            why = (done.stderr.strip().splitlines() or ["no archive written"])[-1]
            raise ConfigError(f"could not download llama-cpp-python=={LLAMA_CPP_PYTHON}'s source from the package "
                              f"index with pip (for llama.cpp's Qwen2 vocabulary): {why}. Connect once (it is cached "
                              f"in {dest.parent}), or pass --vocab-gguf PATH to a ggml-vocab-qwen2.gguf")
        out = Path(tmp) / "tree"
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(PREFIX)
                       and any(m.name[len(PREFIX):].startswith(k) for k in MEMBERS)]
            for m in members:
                m.name = m.name[len(PREFIX):]
            tar.extractall(out, members=members, filter="data")
        return _publish(out, dest)


def vocab_gguf() -> Path:
    """llama.cpp's vocabulary-only GGUF of Qwen2 (``ggml-vocab-qwen2.gguf``), from the cache."""
    return source_dir() / VOCAB


def vocab_cases(gguf: Path | None = None) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test cases for the Qwen2 vocabulary: (text, expected ids without special tokens)."""
    base = gguf or vocab_gguf()
    texts = Path(f"{base}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = Path(f"{base}.out").read_text(encoding="utf-8").split("\n")
    return [(t, [int(i) for i in line.split()]) for t, line in zip(texts, ids, strict=False)]


def qwen2_vocab(gguf: Path) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` of the BPE vocabulary in ``gguf`` (ids below ``REAL_TOKENS``), cached."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ConfigError(f"--vocab-gguf: expected a GGUF vocabulary file such as llama.cpp's "
                          f"models/ggml-vocab-qwen2.gguf, found no file at {gguf}")
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    dest = cache_root() / f"qwen2-vocab-{digest}"
    if not (dest / "merges.txt").is_file():
        vocab, merges = _read_gguf_vocab(gguf)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".vocab-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like the rest of it
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        _publish(tmp, dest)
    return dest / "vocab.json", dest / "merges.txt"


def _read_gguf_vocab(gguf: Path) -> tuple[dict[str, int], list[str]]:
    from gguf import GGUFReader  # the gguf package (llama.cpp's own reader)

    try:
        fields = GGUFReader(gguf).fields
        kind = bytes(fields["tokenizer.ggml.model"].parts[-1]).decode()
        tok, types, merges = (fields[f"tokenizer.ggml.{k}"] for k in ("tokens", "token_type", "merges"))
    except (KeyError, ValueError, OSError) as exc:
        raise ConfigError(f"--vocab-gguf {gguf}: expected a GGUF file with a BPE vocabulary (tokenizer.ggml.tokens "
                          f"and merges), found {type(exc).__name__}: {exc}") from None
    tokens = [bytes(tok.parts[i]).decode("utf-8") for i in tok.data]
    normal = sum(1 for i in types.data if int(types.parts[i][0]) == 1)
    if kind != "gpt2" or normal != REAL_TOKENS or len(tokens) < REAL_TOKENS:
        raise ConfigError(f"--vocab-gguf {gguf}: expected Qwen2's byte-level BPE vocabulary ({REAL_TOKENS} ordinary "
                          f"tokens, model gpt2), found {normal} ordinary tokens of model {kind!r}")
    return {t: i for i, t in enumerate(tokens[:REAL_TOKENS])}, [bytes(merges.parts[i]).decode("utf-8")
                                                                  for i in merges.data]


# ---------------------------------------------------------------- vqa dev serve-tiny

SERVED_ROLE = "vlm-qwen2.5-vl"  # the tiny model llama.cpp serves (its converter and mtmd handle Qwen2.5-VL)


def checkpoint_digest(model_dir: Path) -> str:
    """A hash of everything llama.cpp's converter reads from ``model_dir`` (every file in it, by name and content)
    and of the converter's version: the key of the converted files in the cache."""
    h = hashlib.sha256(f"llama-cpp-python=={LLAMA_CPP_PYTHON}".encode())
    for f in sorted(p for p in Path(model_dir).iterdir() if p.is_file()):
        h.update(f"\0{f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def convert(model_dir: Path) -> tuple[Path, Path]:
    """The checkpoint as GGUF with llama.cpp's own converter: the text model (f16) and the vision projector
    (``--mmproj``). Kept in the cache (``gguf-<digest>``, keyed by ``checkpoint_digest``): the tiny builds are
    seeded, so the same checkpoint is converted once per machine, not once per ``serve-tiny``."""
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").is_file():
        raise ConfigError(f"expected a checkpoint folder with model.safetensors, found none in {model_dir}; "
                          "write one with: vqa dev make-tiny DIR")
    dest = cache_root() / f"gguf-{checkpoint_digest(model_dir)}"
    names = ("model-f16.gguf", "mmproj-f16.gguf")
    if not all((dest / n).is_file() for n in names):
        converter = source_dir() / "convert_hf_to_gguf.py"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".gguf-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like the rest of it
        try:
            for name, extra in zip(names, ([], ["--mmproj"])):
                cmd = [sys.executable, str(converter), str(model_dir), "--outfile", str(tmp / name), "--outtype", "f16",
                       *extra]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    why = (done.stderr.strip().splitlines() or ["no message"])[-1]
                    raise ConfigError(f"llama.cpp's converter could not convert {model_dir} "
                                      f"({' '.join(extra) or 'text'} model): {why}. Needs torch, sentencepiece and "
                                      "numpy: pip install 'vqa-orchestrator[llamacpp]'")
            _publish(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / names[0], dest / names[1]


def server_command(text_gguf: Path, mmproj_gguf: Path, *, host: str, port: int, alias: str,
                   n_ctx: int = 4096) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server on the converted model (Qwen2.5-VL's chat format and projector)."""
    try:
        import llama_cpp.server  # noqa: F401  (its server extra: fastapi, uvicorn, sse-starlette)
    except ImportError as exc:
        raise ConfigError(f"llama.cpp's server is not installed ({exc}); install it with: pip install "
                          "'vqa-orchestrator[llamacpp]' (pip builds llama-cpp-python once, a few minutes)") from None
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(text_gguf), "--clip_model_path", str(mmproj_gguf),
            "--chat_format", "qwen2.5-vl", "--model_alias", alias, "--host", host, "--port", str(port),
            "--n_ctx", str(n_ctx)]

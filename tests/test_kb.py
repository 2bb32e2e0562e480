"""The knowledge base: real e5 retrieval quality, persistence, appends, index choice, leakage guard, embedder
identity, bad input, and ``vqa kb`` as a user runs it. CLIP runs as a tiny random-weight model built from a
config and loaded through the real ``AutoModel``/``AutoProcessor`` code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from agent.cli.kb import kb_app
from agent.core.errors import ConfigError, DataError
from agent.kb.build import add_to_kb, build_kb
from tools.retrieve import index as kb_index
from tools.retrieve.embedders import E5Backend, identity, load_embedder, normalised
from tools.retrieve.index import choose_index_type
from tools.retrieve.kb import EmbedderMismatch, Guard, KbEntry, KnowledgeBase, question_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRAIN = EXAMPLES / "train.csv"

# 20 short passages about Korean culture, half Korean and half English.
PASSAGES = {
    "kimchi": "김치는 배추나 무에 고춧가루, 마늘, 젓갈을 넣어 발효시킨 한국의 대표적인 반찬이다.",
    "hanbok": "Hanbok is the traditional Korean dress: a short jeogori jacket worn with a long chima skirt or "
              "baji trousers.",
    "gyeongbokgung": "경복궁은 1395년 조선 왕조가 한양에 세운 첫 번째 법궁으로, 근정전과 경회루가 유명하다.",
    "chuseok": "Chuseok is the autumn harvest festival on the fifteenth day of the eighth lunar month; families "
               "visit ancestral graves and make songpyeon.",
    "seollal": "설날은 음력 1월 1일로, 어른께 세배를 드리고 떡국을 먹으며 한 살 더 먹는 명절이다.",
    "hangul": "한글은 1443년 세종대왕이 백성을 위해 만든 문자로, 1446년 훈민정음이라는 이름으로 반포되었다.",
    "bibimbap": "Bibimbap is a bowl of warm rice topped with seasoned vegetables, beef, a fried egg and gochujang "
                "chili paste, mixed before eating.",
    "taekwondo": "태권도는 화려한 발차기 기술이 특징인 한국의 무술로, 2000년부터 올림픽 정식 종목이다.",
    "gayageum": "The gayageum is a traditional Korean zither with twelve silk strings that the player plucks "
                "with the fingers.",
    "bulguksa": "불국사는 경주 토함산에 있는 신라 시대의 절로, 마당에 다보탑과 석가탑이 서 있다.",
    "ondol": "Ondol is the Korean underfloor heating system: smoke from a kitchen fire passes through flues "
             "beneath a stone floor.",
    "talchum": "탈춤은 탈을 쓰고 추는 한국의 전통 춤극으로, 양반과 승려를 풍자하는 내용이 많다.",
    "tteokbokki": "Tteokbokki is a popular street food of chewy rice cakes simmered in a sweet and spicy red "
                  "pepper sauce.",
    "hanok": "한옥은 기와지붕과 나무 기둥, 온돌방과 대청마루를 갖춘 한국의 전통 가옥이다.",
    "pansori": "Pansori is Korean musical storytelling: one singer performs a long epic while a drummer keeps "
               "time on the buk.",
    "haenyeo": "제주 해녀는 산소통 없이 바다에 들어가 전복, 소라, 미역을 채취하는 여성 잠수부들이다.",
    "dancheong": "Dancheong is the colourful painting of blue, red and green patterns on the wooden beams of "
                 "palaces and temples.",
    "yutnori": "윷놀이는 네 개의 윷가락을 던져 나온 결과에 따라 말을 움직이는 설날의 전통 놀이이다.",
    "samgyetang": "Samgyetang is a whole young chicken stuffed with glutinous rice, ginseng and jujube, eaten on "
                  "the hottest days of summer.",
    "sungnyemun": "숭례문은 조선 시대 한양 도성의 남쪽 정문으로, 흔히 남대문이라고 부른다.",
}
# Paraphrased questions in the passage's language (the 4-bit e5-small ranks across languages poorly).
QUERIES = [
    ("배추로 만든 발효 음식은 무엇인가요?", "kimchi"),
    ("Which holiday celebrates the autumn harvest?", "chuseok"),
    ("설날에 먹는 음식은 무엇인가요?", "seollal"),
    ("한글을 만든 왕은 누구인가요?", "hangul"),
    ("Which instrument has twelve silk strings?", "gayageum"),
    ("How were traditional Korean floors heated?", "ondol"),
    ("What is the spicy rice cake street food called?", "tteokbokki"),
    ("조선이 가장 먼저 지은 궁궐은 어디인가요?", "gyeongbokgung"),
    ("Which soup is made with chicken and ginseng?", "samgyetang"),
    ("Who are the women divers of Jeju island?", "haenyeo"),
    ("다보탑과 석가탑이 있는 절은?", "bulguksa"),
    ("올림픽 종목인 한국의 무술은?", "taekwondo"),
    ("What is the traditional Korean clothing called?", "hanbok"),
    ("남대문의 원래 이름은?", "sungnyemun"),
    ("Which storytelling art is performed by a singer and a drummer?", "pansori"),
    ("윷을 던지는 놀이는?", "yutnori"),
    ("가면을 쓰고 추는 춤은?", "talchum"),
]


def write_jsonl(path: Path, items: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in items.items()),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def e5() -> E5Backend:
    return E5Backend()


@pytest.fixture(scope="module")
def passages_kb(tmp_path_factory, e5) -> Path:
    root = tmp_path_factory.mktemp("kb")
    build_kb(write_jsonl(root / "passages.jsonl", PASSAGES), root / "kb", clip="e5")
    return root / "kb"


@pytest.fixture(scope="module")
def tiny_clip(tiny_dir: Path) -> Path:
    return tiny_dir / "clip"  # the session's tiny checkpoints: not built again here


# ---------------------------------------------------------------- retrieval quality (real e5)

@pytest.mark.slow
def test_e5_ranks_the_right_passage_first(passages_kb: Path, e5: E5Backend) -> None:
    kb = KnowledgeBase.open(passages_kb)
    firsts = {q: kb.search(e5, text=q, k=3)[0][0].entry.id for q, _ in QUERIES}
    assert firsts == {q: want for q, want in QUERIES}


@pytest.mark.slow
def test_passage_scores_are_cosines_in_descending_order(passages_kb: Path, e5: E5Backend) -> None:
    kb = KnowledgeBase.open(passages_kb)
    hits, excluded = kb.search(e5, text="윷을 던지는 놀이는?", k=5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and not excluded
    q = e5.embed_texts(["윷을 던지는 놀이는?"], "query")[0]
    p = e5.embed_texts([PASSAGES[hits[0].entry.id]], "passage")[0]
    assert hits[0].score == pytest.approx(float(q @ p), abs=1e-5)  # passages are scored on text alone
    assert hits[0].image_score is None and hits[0].text_score == hits[0].score


# ---------------------------------------------------------------- persistence, manifest, appends

def test_manifest_records_format_embedder_and_indexes(passages_kb: Path, e5: E5Backend) -> None:
    m = json.loads((passages_kb / "manifest.json").read_text(encoding="utf-8"))
    assert (m["format"], m["version"], m["count"], m["kinds"]) == ("vqa-kb", 1, 20, {"passage": 20})
    assert m["embedder"] | {} == {"name": e5.name, "spec": "e5", "backend": "e5", "dim": 384,
                                  "modalities": ["text"], "fingerprint": e5.fingerprint}
    assert m["indexes"] == {"text": {"type": "flat", "params": {}, "count": 20}}
    assert sorted(p.name for p in passages_kb.iterdir()) == ["entries.jsonl", "manifest.json", "text.faiss"]


@pytest.mark.slow
def test_round_trip_gives_the_same_entries_and_hits(tmp_path: Path, e5: E5Backend) -> None:
    entries = [KbEntry(id=k, kind="passage", text=v) for k, v in PASSAGES.items()]
    mem = KnowledgeBase.create(tmp_path / "kb", identity(e5))
    mem.extend(entries, e5.embed_texts([e.text for e in entries], "passage"))
    mem.save()
    disk = KnowledgeBase.open(tmp_path / "kb")
    assert disk.entries == mem.entries
    q = e5.embed_texts(["가면을 쓰고 추는 춤은?"], "query")[0]
    assert [h.as_dict() for h in disk.search_vectors(None, q, 5)[0]] == \
           [h.as_dict() for h in mem.search_vectors(None, q, 5)[0]]


@pytest.mark.slow
def test_add_appends_new_ids_and_skips_known_ones(tmp_path: Path, e5: E5Backend) -> None:
    names = list(PASSAGES)
    first = build_kb(write_jsonl(tmp_path / "a.jsonl", {k: PASSAGES[k] for k in names[:10]}), tmp_path / "kb")
    assert (first.added, first.total) == (10, 10)
    more = write_jsonl(tmp_path / "b.jsonl", {k: PASSAGES[k] for k in names[8:]})  # 2 old + 10 new
    s = add_to_kb(tmp_path / "kb", more)
    assert (s.added, s.total) == (10, 20)
    assert sorted(x.where for x in s.skipped) == sorted(names[8:10])
    assert all("already in the knowledge base" in x.reason for x in s.skipped)
    kb = KnowledgeBase.open(tmp_path / "kb")
    assert [e.id for e in kb.entries] == names and len(kb.manifest.sources) == 2
    assert kb.search(e5, text="윷을 던지는 놀이는?", k=1)[0][0].entry.id == "yutnori"  # from the append
    again = add_to_kb(tmp_path / "kb", more)
    assert (again.added, again.total, len(again.skipped)) == (0, 20, 12)


def test_jsonl_bad_lines_and_repeated_ids_are_skipped_with_reasons(tmp_path: Path) -> None:
    src = tmp_path / "p.jsonl"
    src.write_text('{"id": "a", "text": "김치는 발효 음식이다."}\nnot json\n{"id": "b"}\n'
                   '{"id": "a", "text": "again"}\n\n{"id": 7, "text": "numeric ids become strings"}\n',
                   encoding="utf-8")
    s = build_kb(src, tmp_path / "kb")
    assert s.added == 2 and [e.id for e in KnowledgeBase.open(tmp_path / "kb").entries] == ["a", "7"]
    assert [(x.where, x.reason.split(" ")[0]) for x in s.skipped] == [("line 2", "not"), ("line 3", "expected"),
                                                                      ("a", "line")]


# ---------------------------------------------------------------- index choice

@pytest.mark.parametrize(("n", "choice", "expected"), [
    (1, "auto", "flat"), (kb_index.FLAT_MAX, "auto", "flat"), (kb_index.FLAT_MAX + 1, "auto", "ivf"),
    (10, "hnsw", "hnsw"), (10**6, "flat", "flat"),
])
def test_choose_index_type(n: int, choice: str, expected: str) -> None:
    assert choose_index_type(n, choice) == expected


def test_unknown_index_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="flat"):
        choose_index_type(10, "annoy")


@pytest.mark.parametrize(("n", "nlist", "nprobe"), [(20, 1, 1), (10_000, 256, 32), (100_000, 1264, 126)])
def test_ivf_parameters(n: int, nlist: int, nprobe: int) -> None:
    assert (kb_index.ivf_lists(n), kb_index.ivf_probes(kb_index.ivf_lists(n))) == (nlist, nprobe)


def synthetic_kb(root: Path, n: int, dim: int = 32, index: str = "auto", seed: int = 0):
    rng = np.random.default_rng(seed)
    vecs = normalised(rng.standard_normal((n, dim)))
    kb = KnowledgeBase.create(root, {"name": "synthetic", "spec": "-", "backend": "test", "dim": dim,
                                     "modalities": ["text"], "fingerprint": "x"}, index=index)
    kb.extend([KbEntry(id=f"v{i}", kind="passage", text=f"v{i}") for i in range(n)], vecs)
    return kb, vecs


def test_auto_switches_to_ivf_past_the_threshold_and_retrains_as_it_grows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(kb_index, "FLAT_MAX", 100)
    kb, vecs = synthetic_kb(tmp_path / "kb", 100)
    assert kb.manifest.indexes["text"].type == "flat"
    rng = np.random.default_rng(1)
    more = normalised(rng.standard_normal((300, 32)))
    kb.extend([KbEntry(id=f"w{i}", kind="passage", text="w") for i in range(300)], more)
    info = kb.manifest.indexes["text"]
    assert (info.type, info.count, info.params["trained_on"]) == ("ivf", 400, 400)
    kb.extend([KbEntry(id=f"x{i}", kind="passage", text="x") for i in range(100)],
              normalised(rng.standard_normal((100, 32))))
    assert kb.manifest.indexes["text"].params["trained_on"] == 400  # added to, not retrained
    kb.save()
    back = KnowledgeBase.open(tmp_path / "kb")
    for i in (0, 150, 399):  # every stored vector finds itself first, through the reloaded IVF index
        v = vecs[i] if i < 100 else more[i - 100]
        assert back.search_vectors(None, v, 1)[0][0].entry.id == (f"v{i}" if i < 100 else f"w{i - 100}")


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_indexes_survive_a_round_trip(tmp_path: Path, index: str) -> None:
    kb, vecs = synthetic_kb(tmp_path / "kb", 300, index=index)
    kb.save()
    back = KnowledgeBase.open(tmp_path / "kb")
    assert back.manifest.indexes["text"].type == index
    found = [back.search_vectors(None, vecs[i], 1)[0][0].entry.id for i in range(0, 300, 30)]
    assert found == [f"v{i}" for i in range(0, 300, 30)]


# ---------------------------------------------------------------- leakage guard

@pytest.mark.parametrize(("guard", "entry", "excluded"), [
    (Guard(query_id="T1"), KbEntry(id="T1", kind="question", text="q"), True),  # the row itself
    (Guard(image_sha256="h", text="무슨 색?"), KbEntry(id="X", kind="question", text="무슨  색", image_sha256="h"),
     True),  # a copy of the row: same photo, same question
    (Guard(image_sha256="h", text="몇 개?"), KbEntry(id="X", kind="question", text="무슨 색?", image_sha256="h"),
     False),  # another question about the same photo
    (Guard(mode="image", image_sha256="h"), KbEntry(id="X", kind="question", text="other", image_sha256="h"), True),
    (Guard(mode="image", image_sha256="h"), KbEntry(id="X", kind="question", text="other", image_sha256="g"), False),
    (Guard(mode="off", query_id="T1"), KbEntry(id="T1", kind="question", text="q"), False),
    (Guard(mode="off", exclude_ids=frozenset({"T1"})), KbEntry(id="T1", kind="question", text="q"), True),
])
def test_guard_table(guard: Guard, entry: KbEntry, excluded: bool) -> None:
    assert guard.excludes(entry) is excluded


@pytest.mark.slow
def test_guard_never_returns_the_query_row_and_reports_what_it_kept_out(tmp_path: Path, e5: E5Backend) -> None:
    build_kb(TRAIN, tmp_path / "kb")
    kb = KnowledgeBase.open(tmp_path / "kb")
    row = next(e for e in kb.entries if e.id == "TRAIN_008")
    text = question_text(row.text, row.options)
    assert kb.search(e5, text=text, k=1)[0][0].entry.id == "TRAIN_008"  # unguarded, it is its own best match
    for guard in (Guard(query_id="TRAIN_008"), Guard(query_id="copy", image_sha256=row.image_sha256, text=row.text),
                  Guard(mode="image", image_sha256=row.image_sha256)):
        hits, excluded = kb.search(e5, text=text, k=len(kb), guard=guard)
        assert "TRAIN_008" not in [h.entry.id for h in hits] and excluded[0][0] == "TRAIN_008"
        assert len(hits) == len(kb) - 1
    # "image" also keeps out the other question about the same photo; "row" does not
    first = kb.entries[0]
    assert first.id == "TRAIN_000" and kb.entries[1].image_sha256 == first.image_sha256

    def found(mode: str) -> set[str]:
        guard = Guard(mode=mode, query_id=first.id, image_sha256=first.image_sha256, text=first.text)
        return {h.entry.id for h in kb.search(e5, text="신문 이름", k=12, guard=guard)[0]}

    assert "TRAIN_001" in found("row") and "TRAIN_001" not in found("image")
    assert "TRAIN_000" not in found("row") | found("image")


# ---------------------------------------------------------------- CLIP through the real loading code

@pytest.mark.slow
def test_tiny_clip_kb_scores_images_and_text_and_finds_the_same_photo(tmp_path: Path, tiny_clip: Path) -> None:
    from agent.core.images import load_image

    s = build_kb(TRAIN, tmp_path / "kb", clip=str(tiny_clip), image_weight=0.25)
    assert s.indexes == {"text": {"type": "flat", "count": 12}, "image": {"type": "flat", "count": 12}}
    kb = KnowledgeBase.open(tmp_path / "kb")
    clip = load_embedder(str(tiny_clip))
    assert kb.embedder.dim == clip.dim == 16 and kb.embedder.modalities == ["image", "text"]
    photo = load_image(EXAMPLES / "images" / "chelsea.jpg")
    hits, _ = kb.search(clip, image=photo.image, k=3, guard=Guard(mode="off", image_sha256=photo.sha256))
    assert hits[0].entry.image == "images/chelsea.jpg" and hits[0].same_image
    assert hits[0].image_score == pytest.approx(1.0, abs=1e-5) and hits[0].text_score is None
    both, _ = kb.search(clip, image=photo.image, text="고양이 눈 색", k=12)
    for h in both:  # score = 0.25 image + 0.75 text for entries with both
        assert h.score == pytest.approx(0.25 * h.image_score + 0.75 * h.text_score, abs=1e-5)
    assert [h.score for h in both] == sorted((h.score for h in both), reverse=True)


@pytest.mark.slow
def test_tiny_clip_builds_are_identical(tmp_path: Path, tiny_clip: Path) -> None:
    from agent.dev.tiny import make_tiny

    again = make_tiny(tmp_path, ["clip"])["clip"]
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_clip / name).read_bytes(), name
    clip = load_embedder(str(again))
    assert clip.fingerprint == load_embedder(str(tiny_clip)).fingerprint and clip.name == str(again)
    assert clip.embed_texts(["사진 속 동전은 모두 몇 개인가요?"]).shape == (1, 16)  # Hangul through CLIP's byte BPE


@pytest.mark.slow
def test_a_kb_refuses_another_embedder(tmp_path: Path, tiny_clip: Path, e5: E5Backend) -> None:
    import torch
    from transformers import AutoModel

    build_kb(TRAIN, tmp_path / "kb", clip=str(tiny_clip))
    kb = KnowledgeBase.open(tmp_path / "kb")
    with pytest.raises(EmbedderMismatch, match=r"built with embedder .*dim 16.* is 'e5:.*dim 384.*--clip"):
        kb.check_embedder(e5)
    other = tmp_path / "clip-retrained"  # same config and dimension, different weights
    shutil.copytree(tiny_clip, other)
    model = AutoModel.from_pretrained(other)
    with torch.no_grad():
        model.text_projection.weight.mul_(1.01)
    model.save_pretrained(other)
    with pytest.raises(EmbedderMismatch, match="fingerprint"):
        kb.check_embedder(load_embedder(str(other)))
    moved = tmp_path / "clip-moved"  # same weights elsewhere: accepted
    shutil.copytree(tiny_clip, moved)
    kb.check_embedder(load_embedder(str(moved)))
    with pytest.raises(EmbedderMismatch):
        add_to_kb(tmp_path / "kb", write_jsonl(tmp_path / "p.jsonl", {"kimchi": PASSAGES["kimchi"]}), clip="e5")


@pytest.mark.slow
def test_caption_folder_kb_with_tiny_clip(tmp_path: Path, tiny_clip: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee", "coins", "rocket"):
        shutil.copy(EXAMPLES / "images" / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "coffee.txt").write_text("a cup of coffee on a saucer", encoding="utf-8")
    (folder / "metadata.jsonl").write_text('{"file_name": "coins.jpg", "text": "동전 여러 개"}\n', encoding="utf-8")
    s = build_kb(folder, tmp_path / "kb", clip=str(tiny_clip))
    assert (s.source_kind, s.added, [x.where for x in s.skipped]) == ("captions", 2, ["rocket.jpg"])
    kb = KnowledgeBase.open(tmp_path / "kb")
    assert [(e.id, e.kind, e.text) for e in kb.entries] == [("coffee.jpg", "caption", "a cup of coffee on a saucer"),
                                                            ("coins.jpg", "caption", "동전 여러 개")]


# ---------------------------------------------------------------- bad input

def test_missing_images_are_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    shutil.copy(EXAMPLES / "images" / "coffee.jpg", tmp_path / "images" / "coffee.jpg")
    csv = tmp_path / "train.csv"
    csv.write_text("id,path,question,a,b,c,d,answer\n"
                   "1,images/coffee.jpg,컵 옆의 도구는?,포크,칼,젓가락,숟가락,d\n"
                   "2,images/gone.jpg,무슨 색?,빨강,파랑,,,a\n"
                   "3,images/coffee.jpg,답이 없는 행,x,y,,,\n"
                   "4,../escape.jpg,경로?,x,y,,,a\n", encoding="utf-8")
    s = build_kb(csv, tmp_path / "kb")
    assert s.added == 1
    assert {x.where: x.reason.split(":")[0] for x in s.skipped} == {
        "2": "image missing", "3": "no answer", "4": "bad_path"}


def test_special_and_oversized_image_files_are_skipped_without_reading_them(tmp_path: Path) -> None:
    import os

    (tmp_path / "images").mkdir()
    shutil.copy(EXAMPLES / "images" / "coffee.jpg", tmp_path / "images" / "coffee.jpg")
    os.mkfifo(tmp_path / "images" / "pipe.jpg")  # reading it would block forever
    with open(tmp_path / "images" / "sparse.jpg", "wb") as f:  # 1.5 GB claimed, nothing on disk
        f.truncate(1536 << 20)
    csv = tmp_path / "train.csv"
    csv.write_text("id,path,question,a,b,c,d,answer\n"
                   "1,images/coffee.jpg,컵 옆의 도구는?,포크,칼,젓가락,숟가락,d\n"
                   "2,images/pipe.jpg,무슨 색?,빨강,파랑,,,a\n"
                   "3,images/sparse.jpg,무슨 색?,빨강,파랑,,,a\n", encoding="utf-8")
    s = build_kb(csv, tmp_path / "kb")
    assert s.added == 1
    assert {x.where: x.reason.split(":")[0] for x in s.skipped} == {"2": "image not_a_file", "3": "image too_large"}


@pytest.mark.parametrize(("content", "needle"), [
    ("", "empty"),
    ("id,path,question,a,b,c,d,answer\n", "found nothing usable"),
    ("id,path,question,a,b,c,d\nT1,images/coffee.jpg,q?,a,b,c,d\n", "no answer"),
])
def test_unusable_csv_is_a_data_error(tmp_path: Path, content: str, needle: str) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=needle):
        build_kb(csv, tmp_path / "kb", images_root=EXAMPLES)
    assert not (tmp_path / "kb").exists()


def test_opening_and_overwriting_are_guarded(tmp_path: Path, passages_kb: Path) -> None:
    with pytest.raises(ConfigError, match="no knowledge base at .*vqa kb build"):
        KnowledgeBase.open(tmp_path / "nowhere")
    src = write_jsonl(tmp_path / "p.jsonl", {"a": "김치"})
    with pytest.raises(ConfigError, match="already holds a knowledge base.*--force"):
        build_kb(src, passages_kb)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="other files"):
        build_kb(src, tmp_path / "busy")
    copy = tmp_path / "copy"
    shutil.copytree(passages_kb, copy)
    assert build_kb(src, copy, force=True).total == 1
    lines = (copy / "entries.jsonl").read_text(encoding="utf-8").splitlines()
    (copy / "entries.jsonl").write_text("\n".join(lines + lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="inconsistent"):
        KnowledgeBase.open(copy)


def test_manifest_keys_and_errors(tmp_path: Path, passages_kb: Path) -> None:
    m = json.loads((passages_kb / "manifest.json").read_text(encoding="utf-8"))
    assert list(m) == ["format", "version", "embedder", "index_choice", "image_weight", "count", "indexes",
                       "sources", "created", "updated", "kinds"]  # the keys and order the untyped manifest had
    assert list(m["sources"][0]) == ["path", "kind", "added", "skipped", "at"]
    copy = tmp_path / "copy"
    shutil.copytree(passages_kb, copy)
    for broken, error, needle in [({**m, "version": 99}, ConfigError, "format 99, newer"),
                                  ({**m, "format": "x"}, DataError, "not a vqa knowledge-base manifest"),
                                  ({k: v for k, v in m.items() if k != "embedder"}, DataError, "damaged .*embedder"),
                                  ([1, 2], DataError, "not a vqa knowledge-base manifest")]:
        (copy / "manifest.json").write_text(json.dumps(broken), encoding="utf-8")
        with pytest.raises(error, match=needle):
            KnowledgeBase.open(copy)


# ---------------------------------------------------------------- vqa kb (CLI)

def flat(text: str) -> str:
    """Console output with Rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.mark.slow
def test_cli_build_search_add_info(tmp_path: Path, passages_kb: Path) -> None:
    run = CliRunner().invoke
    names = list(PASSAGES)
    r = run(kb_app, ["build", str(write_jsonl(tmp_path / "a.jsonl", {k: PASSAGES[k] for k in names[:15]})),
                     "--out", str(tmp_path / "kb"), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["added"] == 15
    r = run(kb_app, ["add", str(tmp_path / "kb"), str(write_jsonl(tmp_path / "b.jsonl", PASSAGES))])
    assert r.exit_code == 0 and "+5 from" in flat(r.stdout) and "skipped 15:" in flat(r.stdout), r.stdout
    r = run(kb_app, ["search", str(tmp_path / "kb"), "--text", "윷을 던지는 놀이는?", "-k", "2", "--json"])
    hits = json.loads(r.stdout)["hits"]
    assert [h["id"] for h in hits][0] == "yutnori" and len(hits) == 2
    assert set(hits[0]) >= {"id", "score", "kind", "text"} and hits[0]["score"] > hits[1]["score"]
    r = run(kb_app, ["info", str(tmp_path / "kb")])
    assert r.exit_code == 0 and "20 entries" in flat(r.stdout) and "index text: flat" in flat(r.stdout), r.stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["search", "/nope/kb", "--text", "x"], "no knowledge base at /nope/kb"),
    (["search", "KB"], "give --image, --text or both"),
    (["search", "KB", "--image", str(EXAMPLES / "images" / "coffee.jpg")], "no image vectors"),
    (["search", "KB", "--text", "x", "-k", "0"], "k must be at least 1"),
    (["build", "/nope/train.csv", "--out", "OUT"], "found nothing"),
    (["build", str(TRAIN), "--out", "OUT", "--index", "annoy"], "index type"),
    (["build", str(TRAIN), "--out", "OUT", "--clip", "/nope/clip"], "cannot load"),
])
def test_cli_errors_are_clear(args: list[str], needle: str, passages_kb: Path, tmp_path: Path) -> None:
    args = [str(passages_kb) if a == "KB" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    r = CliRunner().invoke(kb_app, args)
    assert r.exit_code == 2 and needle in flat(r.stderr), r.stderr
    assert "Traceback" not in r.stderr + r.stdout

"""A trace as one self-contained HTML page: per question the photo with every tool's boxes drawn as an SVG
overlay (OCR spans with their text), the images tools drew, the tables tools' evidence brings (OCR spans,
retrieved entries), the option probabilities as an inline-SVG bar chart, the planner rounds, the rotations, the
node timeline and the exact prompt. Each tool's part comes from its evidence type (``overlay``, ``table``, ``color``, ``summary``).

Everything is embedded (images as ``data:`` URLs, CSS inline), so the file can be mailed or archived alone.
Only image files inside the run directory (symlinks followed) are embedded, whatever the trace names: a path
elsewhere (an edited trace naming ``/etc/passwd``) is left out with a note on the page.
A small inline script checks that every embedded image decodes and records the count on ``<body>``
(``data-images-ok`` / ``data-images-total``), which the headless-browser test reads back.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

from jinja2 import Environment, StrictUndefined

from agent.core.errors import ImageError
from agent.core.evidence import Box
from agent.core.fileio import atomic_write
from agent.core.images import read_file_bytes
from agent.trace.events import TraceEvent
from agent.trace.read import QuestionView

MAX_EMBED_BYTES = 32 << 20

TEMPLATE = r"""<!doctype html>
<html lang="ko"><head><meta charset="utf-8"><title>vqa trace · {{ title }}</title>
<style>
body{font-family:"Noto Sans CJK KR","NanumGothic",system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
section.question{background:#fff;border:1px solid #ddd;border-radius:8px;padding:16px;margin:0 0 24px}
h1{font-size:20px} h2{font-size:17px;margin:0 0 8px} .dim{color:#777;font-size:12px}
.ok{color:#1a7f37} .wrong{color:#cf222e} .row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0} figure.photo{position:relative;flex:0 1 560px;min-width:280px} figure.photo svg.overlay{width:100%;height:auto;display:block}
figure.marked img{max-width:420px;border:1px solid #ccc} figcaption{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:13px} td,th{border-bottom:1px solid #eee;padding:2px 8px;text-align:left}
pre.prompt{white-space:pre-wrap;background:#f4f4f4;padding:8px;font-size:12px;max-height:360px;overflow:auto}
.box{fill:none;stroke-width:3;vector-effect:non-scaling-stroke} .boxlabel{font-size:14px;paint-order:stroke;stroke:#fff;stroke-width:3px}
.tag{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;background:#eee;margin-right:4px}
.cached{background:#e8d5ff} .failed{background:#ffd8d8}
</style></head>
<body data-questions="{{ questions|length }}">
<h1>vqa trace · {{ title }}</h1>
<p class="dim">{{ questions|length }} question(s){% if truncated %}, first {{ questions|length }} of {{ truncated }}{% endif %}; trace schema v{{ version }}</p>
{% for q in questions %}
<section class="question" id="q-{{ q.qid }}" data-qid="{{ q.qid }}" data-answer="{{ q.answer or '' }}" data-gold="{{ q.gold or '' }}">
<h2>{{ q.qid }}{% for t in q.tags %} <span class="tag">{{ t }}</span>{% endfor %}
 · answer <b>{{ q.answer or '-' }}</b>{% if q.gold %} · gold {{ q.gold }}
 <span class="{{ 'ok' if q.gold == q.answer else 'wrong' }}">{{ '✓' if q.gold == q.answer else '✗' }}</span>{% endif %}
 <span class="dim">{{ '%.2f'|format(q.seconds) }}s · run {{ q.run }}</span></h2>
<p class="text">{{ q.text }}</p>
{% for e in q.errors %}<p class="error wrong">{{ e }}</p>{% endfor %}
{% for n in q.notes %}<p class="note dim">{{ n }}</p>{% endfor %}
<div class="row">
{% if q.photo %}
<figure class="photo"><svg class="overlay" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {{ q.photo.w }} {{ q.photo.h }}">
<image class="photo-image" href="{{ q.photo.src }}" x="0" y="0" width="{{ q.photo.w }}" height="{{ q.photo.h }}" preserveAspectRatio="none"/>
{% for layer in q.layers %}<svg class="layer layer-{{ layer.tool }}" x="0" y="0" width="{{ q.photo.w }}" height="{{ q.photo.h }}" viewBox="0 0 {{ layer.w }} {{ layer.h }}" preserveAspectRatio="none">
{% for b in layer.boxes %}<g class="box-group {{ layer.cls }}" data-tool="{{ layer.tool }}" data-label="{{ b.label }}"><title>{{ layer.tool }}: {{ b.label }}</title>
<rect class="box" x="{{ b.x }}" y="{{ b.y }}" width="{{ b.w }}" height="{{ b.h }}" stroke="{{ layer.color }}"/>
{% if b.label %}<text class="boxlabel" x="{{ b.x }}" y="{{ [b.y - 4, 14]|max }}" fill="{{ layer.color }}">{{ b.label }}</text>{% endif %}</g>
{% endfor %}</svg>{% endfor %}
</svg><figcaption>{{ q.photo.caption }}</figcaption></figure>
{% endif %}
<div>
<ol type="a" class="options">{% for k, v in q.options %}<li data-letter="{{ k }}">{{ v }}</li>{% endfor %}</ol>
<svg class="probs" xmlns="http://www.w3.org/2000/svg" width="360" height="{{ 24 * q.probs|length + 8 }}" role="img" aria-label="option probabilities">
{% for p in q.probs %}<g class="bar" data-letter="{{ p.letter }}" data-p="{{ '%.4f'|format(p.p) }}">
<text x="0" y="{{ 24 * loop.index0 + 20 }}" font-size="14">{{ p.letter }}</text>
<rect x="20" y="{{ 24 * loop.index0 + 6 }}" width="{{ '%.1f'|format(260 * p.p) }}" height="18" fill="{{ p.color }}"/>
<text x="{{ '%.1f'|format(26 + 260 * p.p) }}" y="{{ 24 * loop.index0 + 20 }}" font-size="13">{{ '%.1f'|format(100 * p.p) }}%{% if p.gold %} (gold){% endif %}</text></g>
{% endfor %}</svg>
<p class="dim">{{ q.method }}{% if q.flags %} · {{ q.flags|join(', ') }}{% endif %}</p>
</div></div>
{% if q.marked %}<div class="row">{% for m in q.marked %}<figure class="marked" data-tool="{{ m.tool }}"><img alt="{{ m.tool }} {{ m.name }}" src="{{ m.src }}"><figcaption>{{ m.tool }}: {{ m.name }}</figcaption></figure>{% endfor %}</div>{% endif %}
{% for t in q.tables %}<h3>{{ t.title }}</h3><table class="{{ t.css }}"><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in t.rows %}<tr class="{{ t.row_css }}">{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>{% endfor %}
{% if q.rounds %}<h3>Planner rounds</h3><table class="rounds"><tr><th>round</th><th>planner</th><th>why</th><th>tools called</th><th>answer</th><th>top</th><th>margin</th><th>seconds</th></tr>
{% for r in q.rounds %}<tr class="round" data-round="{{ r.index }}" data-tools="{{ r.calls|map(attribute='tool')|join(',') }}"><td>{{ r.index }}</td><td>{{ r.planner }}</td><td>{{ r.why }}</td>
<td>{% for c in r.calls %}<span class="tag{% if c.cached %} cached{% endif %}{% if not c.ok %} failed{% endif %}">{{ c.tool }}{% if c.args %} {{ c.args|tojson }}{% endif %}</span>{% else %}none{% endfor %}</td>
<td>{{ r.answer or '-' }}</td><td>{{ '-' if r.confidence is none else '%.2f'|format(r.confidence) }}</td><td>{{ '-' if r.margin is none else '%.2f'|format(r.margin) }}</td><td>{{ '%.2f'|format(r.seconds) }}</td></tr>{% endfor %}</table>{% endif %}
{% if q.rotations %}<h3>Rotations</h3><table class="rotations"><tr><th>shift</th><th>order shown</th><th>chose</th>{% for k, _ in q.options %}<th>{{ k }}</th>{% endfor %}</tr>
{% for r in q.rotations %}<tr><td>{{ r.shift }}</td><td>{{ r.order|join('') }}</td><td>{{ r.chosen }}</td>{% for k, _ in q.options %}<td>{{ '%.2f'|format(r.probs.get(k, 0)) }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
<h3>Timeline</h3><table class="timeline"><tr><th>node</th><th>start</th><th>seconds</th><th></th></tr>
{% for e in q.timeline %}<tr class="node" data-node="{{ e.label }}"><td>{{ e.label }}</td><td>+{{ '%.3f'|format(e.offset) }}</td><td>{{ '%.3f'|format(e.seconds) }}</td>
<td>{% if e.cached %}<span class="tag cached">cached</span>{% endif %}{% if not e.ok %}<span class="tag failed">{{ e.error }}</span>{% endif %}{{ e.summary }}</td></tr>{% endfor %}</table>
{% if q.prompt %}<details><summary>prompt sent to the model ({{ q.prompt|length }} characters)</summary><pre class="prompt">{{ q.prompt }}</pre></details>{% endif %}
</section>
{% endfor %}
<script>
window.addEventListener("load", function () {
  var srcs = [];
  document.querySelectorAll("img").forEach(function (i) { srcs.push(i); });
  var ok = srcs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var photos = document.querySelectorAll("image.photo-image");
  var pending = photos.length, good = 0;
  function done() {
    document.body.setAttribute("data-images-ok", String(ok + good));
    document.body.setAttribute("data-images-total", String(srcs.length + photos.length));
  }
  if (!pending) { done(); return; }
  photos.forEach(function (p) {
    var im = new Image();
    im.onload = function () { good += im.naturalWidth > 0 ? 1 : 0; if (--pending === 0) done(); };
    im.onerror = function () { if (--pending === 0) done(); };
    im.src = p.getAttribute("href");
  });
});
</script>
</body></html>
"""


def embedded(path: str, base: Path, notes: list[str]) -> str | None:
    """The image file a trace event names as a ``data:`` URL, only when it lies inside ``base`` (the run directory,
    symlinks followed) and is a regular image file of at most ``MAX_EMBED_BYTES``; else ``None`` and a note why."""
    root = Path(base).resolve()
    try:
        target = (root / path).resolve()  # an absolute ``path`` replaces root
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL in the path
        notes.append(f"not embedded: {path} ({e})")
        return None
    if not target.is_relative_to(root):
        notes.append(f"not embedded: {path} is outside the run directory {root}")
        return None
    mime = mimetypes.guess_type(target.name)[0] or ""
    if not mime.startswith("image/"):
        notes.append(f"not embedded: {path} is not an image file (expected .jpg, .png ...)")
        return None
    try:
        data = read_file_bytes(target, MAX_EMBED_BYTES)
    except ImageError as e:
        notes.append(f"not embedded: {e}")
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


def _rect(b: Box) -> dict[str, Any]:
    x1, y1, x2, y2 = b.xyxy
    return {"x": x1, "y": y1, "w": max(x2 - x1, 0), "h": max(y2 - y1, 0), "label": b.label}


def _question_context(view: QuestionView, base: Path) -> dict[str, Any]:
    q, a = view.question, view.answer
    load = view.first("node", "load_image")
    photo, size, notes = None, None, []
    if load is not None and load.outputs.get("file"):
        size = load.outputs.get("size") or [1, 1]
        src = embedded(str(load.outputs["file"]), base, notes)
        if src:
            photo = {"src": src, "w": size[0], "h": size[1],
                     "caption": f"{Path(str(load.inputs.get('path', ''))).name} · {size[0]}×{size[1]} working copy"}
    layers, marked, tables, summaries = [], [], [], {}
    tool_events: list[TraceEvent] = view.nodes("run_tool")
    for e in tool_events:
        r = e.tool_result()
        ev = r.evidence if r is not None and r.ok else None
        if ev is not None:
            summaries[id(e)] = r.summary(4)
            overlay, table = ev.overlay(), ev.table()
            if overlay is not None and size:
                w, h = (overlay.size or size)[:2]
                boxes = [_rect(b) for b in overlay.boxes]
                layers.append({"tool": e.tool, "w": w, "h": h, "boxes": boxes, "color": ev.color,
                               "cls": overlay.css or f"tool-box {e.tool}-box"})
            if table is not None:
                tables.append(table)
        for name, path in (e.outputs.get("artifacts") or {}).items():
            src = embedded(str(path), base, notes)
            if src:
                marked.append({"tool": e.tool, "name": name, "src": src})
    reasons = view.nodes("reason")  # one per planner round: the last one decided the answer
    ro = reasons[-1].outputs if reasons else {}
    probs_src = a.get("probs") or ro.get("probs") or {}
    chosen, gold = a.get("answer"), q.get("gold")
    probs = [{"letter": k, "p": float(p), "gold": k == gold,
              "color": "#2da44e" if k == chosen and k == gold else "#cf222e" if k == chosen else
              "#8fd19e" if k == gold else "#9aa4b2"} for k, p in probs_src.items()]
    rot = view.first("rotations")
    t0 = view.start
    timeline = []
    for e in view.events:
        if e.kind == "question":
            continue
        summary = summaries.get(id(e), "")
        if e.kind == "node" and e.node == "route":
            summary = "tools: " + (", ".join(e.outputs.get("run", [])) or "none")
        elif e.kind == "node" and e.node == "escalate":
            summary = f"{e.outputs.get('why') or ''} → add " + (", ".join(e.outputs.get("add") or []) or "none")
        timeline.append({"label": e.label, "offset": e.start - t0, "seconds": e.seconds, "ok": e.ok,
                         "error": e.error or "", "cached": bool(e.cached), "summary": summary})
    return {"qid": view.qid, "run": view.run, "tags": list(view.tags.values()), "answer": chosen, "gold": gold,
            "seconds": view.seconds, "text": q.get("text", ""), "options": list((q.get("options") or {}).items()),
            "photo": photo, "layers": layers, "marked": marked, "tables": tables, "probs": probs,
            "method": a.get("method") or ro.get("method", ""), "flags": ro.get("flags", []),
            "rotations": rot.outputs.get("rotations", []) if rot else [], "timeline": timeline,
            "prompt": ro.get("prompt"), "rounds": _rounds(a.get("rounds") or []), "errors": [f"{e.label}: {e.error}" for e in view.events if not e.ok],
            "notes": notes}


def _rounds(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finish event's planner rounds with every field the template reads (older traces lack some)."""
    return [{"index": r.get("index"), "planner": r.get("planner", ""), "why": r.get("why") or "",
             "calls": [{"tool": c.get("tool", "?"), "args": c.get("args") or {}, "ok": c.get("ok", True),
                        "cached": c.get("cached", False)} for c in r.get("calls", [])],
             "answer": r.get("answer"), "confidence": r.get("confidence"), "margin": r.get("margin"),
             "seconds": r.get("seconds") or 0.0} for r in rounds]


def render_html(views: list[QuestionView], base: Path, *, title: str, truncated: int | None = None) -> str:
    """The page for ``views``; ``base`` is the trace's folder (event paths are relative to it)."""
    from agent.trace.events import TRACE_VERSION

    env = Environment(autoescape=True, undefined=StrictUndefined)
    return env.from_string(TEMPLATE).render(title=title, version=TRACE_VERSION, truncated=truncated,
                                            questions=[_question_context(v, base) for v in views])


def write_html(views: list[QuestionView], base: Path, out: Path, *, title: str, truncated: int | None = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, render_html(views, base, title=title, truncated=truncated))
    return out

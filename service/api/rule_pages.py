"""A page per rule (the cards' `source.url`): what the rule checks, its source, and worked examples.

The examples are the real cards the service answers for the vignettes of fhir_fixtures/vignettes.toml
that name the rule (and one near miss that stays silent), run through the same pipeline as a hook
call, in process, once per process and lazily on the first page view. A vignette that raises or
times out is left out of the page; the page never shows template source.

Also here, shared with the playground: `markdown_html` (a card's detail as safe HTML) and
`record_texts` (the text the pipeline read from each resource).
"""
from __future__ import annotations

import json
import logging
import re
import threading
import tomllib
import uuid
import weakref
from dataclasses import dataclass, field

from flask import Blueprint, render_template_string
from markupsafe import Markup

from ..config import PROJECT_DIR
from ..errors import Problem
from ..escaping import html_text
from ..logs import safe_exception
from ..pipeline import Call, answer_hook
from ..services import service_for_hook
from .common import rules_url, runtime

log = logging.getLogger(__name__)
blueprint = Blueprint("rule_pages", __name__)

VIGNETTES = PROJECT_DIR / "fhir_fixtures" / "vignettes.toml"
VIGNETTE_REQUESTS = PROJECT_DIR / "fhir_fixtures" / "vignettes"
MAX_EXAMPLES = 3


# ------------------------------------------------------------------ safe markdown
_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # CommonMark: a backslash before ASCII punctuation
_CODE_SPAN = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_EM = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])|(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_HELD = re.compile("\x00(\\d+)\x00")
_LIST_ITEM = re.compile(r"[-*+]\s+(.*)")
_ORDERED_ITEM = re.compile(r"\d{1,9}[.)]\s+(.*)")


def escape_text(text, braces: bool = True) -> str:
    """HTML-escaped text; with `braces`, { and } too, so that data (chart text) can never read as
    template syntax on a page: `escaping.html_text`, the one function for it."""
    return html_text(text, braces)


def _inline(text: str, braces: bool) -> str:
    """One paragraph's text: everything escaped, then **bold**, *emphasis* and `code` only."""
    held: list[str] = []

    def hold(fragment: str) -> str:
        held.append(fragment)
        return f"\x00{len(held) - 1}\x00"

    text = text.replace("\x00", "\ufffd")
    text = _BACKSLASH_ESCAPE.sub(lambda m: hold(escape_text(m.group(1), braces)), text)
    text = _CODE_SPAN.sub(lambda m: hold(f"<code>{escape_text(m.group(1), braces)}</code>"), text)
    out = escape_text(text, braces)
    out = _STRONG.sub(lambda m: f"<strong>{m.group(1) or m.group(2)}</strong>", out)
    out = _EM.sub(lambda m: f"<em>{m.group(1) or m.group(2)}</em>", out)
    return _HELD.sub(lambda m: held[int(m.group(1))], out)


def markdown_html(text: str, braces: bool = True) -> Markup:
    """A card's detail (CDS Hooks GitHub-flavoured markdown) as HTML that cannot carry markup from
    the chart: every character is escaped first, then only paragraphs, > quotes, - and 1. lists,
    **bold**, *emphasis* and `code` become tags. No links, images, raw HTML or headings."""
    blocks: list[list] = []  # [kind, [items]] where an item is a list of lines
    for raw in str(text or "").splitlines():
        line = raw.strip()
        if not line:
            blocks.append(["gap", []])
            continue
        if line.startswith(">"):
            kind, content = "quote", line[1:].strip()
        elif (m := _LIST_ITEM.fullmatch(line)):
            kind, content = "ul", m.group(1)
        elif (m := _ORDERED_ITEM.fullmatch(line)):
            kind, content = "ol", m.group(1)
        else:
            kind, content = "p", line
        last = blocks[-1] if blocks else None
        if last and last[0] != "gap" and (last[0] == kind or kind == "p"):
            # the same block goes on; a plain line right after a quote or an item continues it (lazily)
            if kind in ("ul", "ol"):
                last[1].append([content])
            else:
                last[1][-1].append(content)
        else:
            blocks.append([kind, [[content]]])
    parts = []
    for kind, items in blocks:
        if kind == "gap":
            continue
        rendered = [_inline(" ".join(lines), braces) for lines in items]
        if kind == "p":
            parts.append(f"<p>{rendered[0]}</p>")
        elif kind == "quote":
            parts.append(f"<blockquote><p>{rendered[0]}</p></blockquote>")
        else:
            parts.append(f"<{kind}>" + "".join(f"<li>{r}</li>" for r in rendered) + f"</{kind}>")
    return Markup("\n".join(parts))


def markdown_inline(text) -> Markup:
    """A card's summary or a suggestion label, as an EHR that renders it as markdown shows it: the
    card renderer's escapes read as the characters they stand for, everything HTML-escaped, one line."""
    return Markup(_inline(" ".join(str(text or "").split()), True))


def record_texts(body, service) -> dict:
    """(reference, element) → the TextSource the pipeline read there (text and date), for showing
    a card's evidence where it was read: the same record assembly as the hook call."""
    from ..deadline import Deadline
    from ..hook_request import parse_hook_request
    from ..record import build_record

    record = build_record(parse_hook_request(body, service), None, Deadline(runtime().settings.hook_deadline))
    return {(source.reference, source.element): source for source in record.texts}


# ------------------------------------------------------------------ worked examples
@dataclass
class _Run:
    """What the service answered for one vignette."""

    cards: list[dict]
    texts: dict
    dates: dict  # reference → the resource's date, for evidence read from codes rather than text


@dataclass
class _Examples:
    vignettes: list[dict] | None = None
    runs: dict = field(default_factory=dict)  # vignette id → _Run, or None when it raised or timed out
    lock: threading.Lock = field(default_factory=threading.Lock)


_EXAMPLES: dict[int, tuple] = {}  # id(runtime) → (weak reference to it, _Examples); Runtime is unhashable
_EXAMPLES_LOCK = threading.Lock()


def _examples_of(rt) -> _Examples:
    with _EXAMPLES_LOCK:
        ref, examples = _EXAMPLES.get(id(rt), (None, None))
        if ref is None or ref() is not rt:
            for key in [k for k, (r, _) in _EXAMPLES.items() if r() is None]:
                del _EXAMPLES[key]
            examples = _Examples()
            _EXAMPLES[id(rt)] = (weakref.ref(rt), examples)
        return examples


def _load_vignettes() -> list[dict]:
    try:
        with open(VIGNETTES, "rb") as fh:
            return [v for v in tomllib.load(fh).get("vignette", []) if isinstance(v, dict) and v.get("id")]
    except (OSError, tomllib.TOMLDecodeError) as exc:
        log.warning("rule pages: no worked examples, %s unreadable (%s)", VIGNETTES.name, exc)
        return []


def _run(rt, vignette_id: str) -> _Run | None:
    try:
        body = json.loads((VIGNETTE_REQUESTS / f"{vignette_id}.json").read_text())
        service = service_for_hook(body.get("hook"))
        if service is None:
            raise ValueError(f"no service for hook {body.get('hook')!r}")
        body = dict(body, hookInstance=str(uuid.uuid4()))
        # a worked example is no hook call: nothing recorded, no feedback screens it
        answer = answer_hook(rt, service, body, Call(rules_url(), origin=None, screen=False, as_of=_as_of(rt)))
        if answer.timed_out:
            log.warning("rule pages: vignette %s timed out: left out of the worked examples", vignette_id)
            return None
        return _Run(answer.cards, record_texts(body, service), _resource_dates(body))
    except Exception as exc:  # noqa: BLE001 - an example that fails is left out; the page still renders
        log.error("rule pages: vignette %s failed, left out of the worked examples: %s",
                  vignette_id, safe_exception(exc))
        return None


def _as_of(rt):
    """The day a worked example's code set is checked for: the first of the loaded release's period, so
    that the page shows what the rule proposes whatever the vignettes' dates (2026-11-20, after the
    packaged release); None when the period is not known (the examples then say so, as answers do)."""
    period = rt.release.period
    return period.start if period is not None else None


def _code_set_line(rt) -> str:
    release = rt.release
    if release.period is None:
        return f"{release.title}, validity period unknown ({release.period_explained})"
    return f"{release.title}, valid {release.period} ({release.period_explained})"


def _resource_dates(body) -> dict:
    from ..record import _date_of

    out: dict[str, str] = {}

    def visit(value) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("resourceType"), str) and isinstance(value.get("id"), str):
                date = _date_of(value)
                if date:
                    out.setdefault(f"{value['resourceType']}/{value['id']}", date)
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)

    visit({"context": body.get("context"), "prefetch": body.get("prefetch")})
    return out


def _names(vignette: dict) -> set[str]:
    return {e.get("rule") for e in vignette.get("expect") or [] if isinstance(e, dict)}


def worked_examples(rt, rule_id: str) -> list[dict]:
    """Up to MAX_EXAMPLES examples of the rule: vignettes where it fires (its own first), and one
    near miss (a `<rule>-silent-` vignette) that the rule stays silent on, when there is one."""
    examples = _examples_of(rt)
    key = rt.catalogue.contract["extension_key"]
    with examples.lock:
        if examples.vignettes is None:
            examples.vignettes = _load_vignettes()

        def run(vignette_id: str) -> _Run | None:
            if vignette_id not in examples.runs:
                examples.runs[vignette_id] = _run(rt, vignette_id)
            return examples.runs[vignette_id]

        prefix = rule_id.lower() + "-"
        naming = [v for v in examples.vignettes if rule_id in _names(v)]
        naming.sort(key=lambda v: not v["id"].startswith(prefix))  # stable: its own vignettes first
        misses = [v for v in examples.vignettes
                  if v["id"].startswith(prefix + "silent-") and rule_id not in _names(v)]
        near_miss = None
        for vignette in misses:
            result = run(vignette["id"])
            if result is not None and not any(c["extension"][key]["rule"] == rule_id for c in result.cards):
                near_miss = (vignette, result)
                break
        firing = []
        for vignette in naming:
            if len(firing) >= MAX_EXAMPLES - (1 if near_miss else 0):
                break
            result = run(vignette["id"])
            cards = [c for c in (result.cards if result else []) if c["extension"][key]["rule"] == rule_id]
            if cards:
                firing.append((vignette, result, cards))
    out = [{"id": v["id"], "about": v.get("about", ""), "fires": True,
            "cards": [_card_view(c, r, key) for c in cards]} for v, r, cards in firing]
    if near_miss:
        vignette, result = near_miss
        out.append({"id": vignette["id"], "about": vignette.get("about", ""), "fires": False, "cards": [],
                    "others": sorted({c["extension"][key]["rule"] for c in result.cards})})
    return out


def _card_view(card: dict, run: _Run, key: str) -> dict:
    payload = card["extension"][key]
    evidence = []
    for e in payload.get("evidence") or []:
        source = run.texts.get((e.get("reference"), e.get("element")))
        date = getattr(source, "date", None) or run.dates.get(e.get("reference"))
        evidence.append({"text": e.get("text", ""), "reference": e.get("reference", ""),
                         "element": e.get("element", ""), "assertion": e.get("assertion", ""),
                         "date": date[:10] if isinstance(date, str) else None})
    return {"indicator": card.get("indicator", ""), "summary": card.get("summary", ""),
            "topic": (card.get("source") or {}).get("topic", {}).get("display", ""),
            "detail": markdown_html(card.get("detail", "")),
            "suggestions": [s.get("label", "") for s in card.get("suggestions") or []],
            "current": payload.get("currentCodes") or [], "proposed": payload.get("proposedCodes") or [],
            "missing": payload.get("missingDocumentation") or [], "evidence": evidence}


def _prose(text: str) -> Markup:
    """A template's hard-wrapped prose (about, source, rationale) as paragraphs, escaped. Braces are
    left as they are: template syntax in these texts is a bug the page must not hide."""
    return markdown_html(text, braces=False)


# ------------------------------------------------------------------ pages
_STYLE = """<style>
body{font-family:system-ui,sans-serif;max-width:54rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1d2330}
code{background:#f3f4f7;border-radius:4px;padding:0 .2rem}
.kind{display:inline-block;padding:.1rem .5rem;border-radius:1rem;background:#e7ecf7;font-size:.9rem}
.critical{background:#fde2e1}.warning{background:#fff1d6}.info{background:#e3f1fb}
table{border-collapse:collapse}td,th{border-bottom:1px solid #dde;padding:.3rem .6rem;text-align:left;vertical-align:top}
.example{border:1px solid #dde;border-radius:6px;padding:.4rem 1rem;margin:1rem 0}
.card{border-left:6px solid #999;padding:.4rem 1rem;margin:.6rem 0;background:#fafbfd}
.card.info{border-color:#2b7bd3}.card.warning{border-color:#e3a008}.card.critical{border-color:#d33}
.ind{font-size:.8rem;text-transform:uppercase;font-weight:600}
blockquote{margin:.4rem 0 .4rem 1rem;padding-left:.6rem;border-left:3px solid #ccd;color:#333}
.meta{color:#556;font-size:.9rem}
</style>"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ t.rule }}: {{ t.title }}</title>
""" + _STYLE + """</head><body>
<p><a href="{{ url_for('rule_pages.index') }}">All rules</a> &middot; {{ product }}</p>
<h1>{{ t.rule }} &mdash; {{ t.title }}</h1>
<p><span class="kind">{{ kind_display }}</span> <span class="kind {{ t.indicator }}">{{ t.indicator }}</span></p>
<h2>What it checks</h2><div id="about">{{ about }}</div>
<h2>Source</h2><div id="source">{{ rule_source }}</div>
{% if rationale %}<h2>For coders</h2><div id="rationale">{{ rationale }}</div>{% endif %}
<h2>Worked examples</h2>
{% if not examples %}<p id="no-examples">No worked example could be produced for this rule.</p>{% endif %}
{% for x in examples %}<section class="example {{ 'fires' if x.fires else 'silent' }}" id="example-{{ x.id }}">
<h3>{{ x.about }}</h3>
<p class="meta">Record: <code>fhir_fixtures/vignettes/{{ x.id }}.json</code></p>
{% for c in x.cards %}<div class="card {{ c.indicator }}"><span class="ind">{{ c.indicator }}</span>{% if c.topic %} &middot; {{ c.topic }}{% endif %}
<h4 class="summary">{{ c.summary | card_text }}</h4>
<div class="detail">{{ c.detail }}</div>
{% if c.suggestions %}<p>Suggestions:</p><ul class="suggestions">{% for label in c.suggestions %}<li>{{ label | card_text }}</li>{% endfor %}</ul>{% endif %}
{% if c.evidence %}<p>Evidence:</p><ul class="evidence">{% for e in c.evidence %}<li>&ldquo;{{ e.text | data_text }}&rdquo; &mdash;
<code>{{ e.reference | data_text }}</code> {{ e.element | data_text }}{% if e.date %}, {{ e.date | data_text }}{% endif %}{% if e.assertion != 'affirmed' %} ({{ e.assertion | data_text }}){% endif %}</li>{% endfor %}</ul>{% endif %}
</div>{% endfor %}
{% if not x.fires %}<p class="near-miss"><b>No {{ t.rule }} card</b>: a near miss the rule stays silent on{% if x.others %}
(the record gets {{ x.others | join(', ') }} cards){% else %} (the record gets no cards){% endif %}.</p>{% endif %}
</section>{% endfor %}
<h2>Declining the card</h2><ul>{% for r in reasons %}<li>{{ r.display }} (<code>{{ r.code }}</code>)</li>{% endfor %}</ul>
<p><small>The examples are the cards this service answers for the vignettes of
<code>fhir_fixtures/vignettes.toml</code>; wording from <code>cards/{{ t.rule }}.toml</code>; codes from the
loaded code set: <span id="code-set">{{ code_set }}</span>.{% if as_of %} The examples are checked against it as
of {{ as_of }}, a day it covers, whatever their records' dates; a hook call dated outside its period gets no
suggestion that sets a code, and says why.{% endif %}</small></p>
</body></html>"""

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ product }}: rules</title>
""" + _STYLE + """</head><body><h1>{{ product }}: the coding rules</h1>
<p id="code-set">Codes from the loaded code set: {{ code_set }}.</p>
<table><tr><th>rule</th><th>what it checks</th><th>card</th></tr>
{% for t in templates %}<tr><td><a href="{{ url_for('rule_pages.page', rule_id=t.rule) }}">{{ t.rule }}</a></td>
<td>{{ t.title }}</td><td><span class="kind">{{ kinds[t.kind].display }}</span> <span class="kind {{ t.indicator }}">{{ t.indicator }}</span></td></tr>{% endfor %}
</table></body></html>"""


@blueprint.app_template_filter("data_text")
def _text_filter(value) -> Markup:
    return Markup(escape_text(value))


@blueprint.app_template_filter("card_text")
def _card_text_filter(value) -> Markup:
    return markdown_inline(value)


@blueprint.get("/rules")
def index():
    rt = runtime()
    return render_template_string(_INDEX, product=rt.catalogue.product, kinds=rt.catalogue.kinds,
                                  code_set=_code_set_line(rt), templates=[rt.catalogue.templates[k] for k in sorted(rt.catalogue.templates)])


@blueprint.get("/rules/<rule_id>")
def page(rule_id: str):
    rt = runtime()
    template = rt.catalogue.templates.get(rule_id)
    if template is None:
        raise Problem.of(404, "not-found", f"no rule {rule_id!r}; the rules are listed at GET /rules")
    rationale = template.text.get("rationale")
    return render_template_string(
        _PAGE, t=template, product=rt.catalogue.product, kind_display=rt.catalogue.kinds[template.kind]["display"],
        about=_prose(template.about), rule_source=_prose(template.source),
        rationale=_prose(rationale) if isinstance(rationale, str) and rationale.strip() else None,
        examples=worked_examples(rt, rule_id), reasons=rt.catalogue.override_reasons(), code_set=_code_set_line(rt),
        as_of=_as_of(rt).isoformat() if _as_of(rt) else None,
    )

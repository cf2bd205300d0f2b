"""The playground at `/`: run a vignette, a pasted hook request or a FHIR Bundle through a hook and
see the cards as an EHR shows them, with the evidence highlighted where it was read. Accepting or
dismissing a card posts real feedback. Server-rendered; no script, no CDN.

It runs the same pipeline as the hook endpoints, in process. It is on when authentication is off
(development), and off otherwise (404) unless SPINE_CDS_PLAYGROUND=true; even then, with
authentication on, every playground request needs a valid bearer JWT from a trusted issuer, as the
hook endpoints do (401 without one): the pipeline never runs, and no feedback is stored, for
someone without a token.

**The service follows the request.** The service picker's first choice, the default, is "the
request's own hook": a vignette (fhir_fixtures/**/*.json, each a hook request naming its `hook`; the
picker names each one's hook) or a pasted hook request runs through the service whose hook it names,
so no vignette fails on first run. Choosing a service is choosing on purpose: a request naming
another hook is then refused with the hook-mismatch error the hook endpoint gives (400), in the page,
saying which service would answer it; it is not re-hooked silently. A pasted FHIR Bundle, or a
pasted request without a `hook`, names none: the service must be chosen, and its hook is used.

**Playground traffic is marked.** The cards it issues are recorded with origin `playground` (the
`origin` column of issued_cards; hook calls are `ehr`), so /analytics, /analytics.csv and /stats
leave them out unless asked (`?include=playground`). Feedback given here is about those cards and
is left out with them. The rule pages' worked examples record nothing (rule_pages._QuietStore).
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone

from flask import Blueprint, redirect, render_template_string, request, url_for
from markupsafe import Markup

from ..bundles import hook_request_from_bundle
from ..config import PROJECT_DIR
from ..errors import Problem
from ..pipeline import Call, answer_hook
from ..services import SERVICES, service_for_hook
from ..store import PLAYGROUND
from .common import require_jwt, rules_url, runtime
from .feedback import parse_feedback
from ..escaping import html_text as escape_text
from .rule_pages import markdown_html, markdown_inline, record_texts

blueprint = Blueprint("playground", __name__)
FIXTURES = PROJECT_DIR / "fhir_fixtures"


@blueprint.before_request
def only_when_enabled():
    rt = runtime()
    if not rt.settings.auth_enabled:
        return
    if not rt.settings.playground:
        raise Problem.of(404, "not-found", "the playground is off (authentication is on; "
                                           "SPINE_CDS_PLAYGROUND=true turns it on, for callers with a token)")
    require_jwt()  # authentication on: the same bearer JWT as the hook endpoints, or 401


FOLLOW_THE_REQUEST = ""  # the service picker's default: the service of the request's own hook
_HOOKS: dict[str, tuple[int, str | None]] = {}  # fixture path -> (mtime_ns, its hook): read once per change


def _hook_of(path) -> str | None:
    """The hook a fixture file names, when it is a hook request of one of our services; None for
    anything else under fhir_fixtures/ (a Bundle, a Bulk Data manifest)."""
    key, mtime = path.as_posix(), path.stat().st_mtime_ns
    cached = _HOOKS.get(key)
    if cached is None or cached[0] != mtime:
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            body = None
        hook = body.get("hook") if isinstance(body, dict) else None
        cached = _HOOKS[key] = (mtime, hook if service_for_hook(hook) else None)
    return cached[1]


def vignettes() -> dict[str, str]:
    """The hook requests under fhir_fixtures/ (relative path -> the hook each names), sorted by path."""
    out = {}
    for path in sorted(FIXTURES.glob("**/*.json")):
        hook = _hook_of(path)
        if hook:
            out[path.relative_to(FIXTURES).as_posix()] = hook
    return out


@blueprint.get("/")
def page():
    return _render()


@blueprint.post("/playground/run")
def run():
    service_id = request.form.get("service", FOLLOW_THE_REQUEST)
    chosen = request.form.get("vignette", "")
    pasted = request.form.get("request", "").strip()
    form = {"pasted": pasted, "chosen": chosen, "service_id": service_id}
    if service_id != FOLLOW_THE_REQUEST and service_id not in SERVICES:
        return _render(error=f"choose a service (not {service_id!r})", **form)
    try:
        if pasted:
            body = json.loads(pasted)
        elif chosen in vignettes():
            body = json.loads((FIXTURES / chosen).read_text())
        else:
            return _render(error="choose a vignette or paste a hook request or a FHIR Bundle", **form)
    except ValueError as exc:
        return _render(error=f"the pasted text is not JSON ({exc})", **form)
    service, error = _service_for(body, service_id)
    if service is None:
        return _render(error=error, **form)
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        body = hook_request_from_bundle(body, service.hook)
    if isinstance(body, dict):
        body = dict(body, hook=body.get("hook", service.hook), hookInstance=str(uuid.uuid4()))
    try:
        # one demo patient: feedback hides nothing (screen=False); its cards are marked as the playground's
        answer = answer_hook(runtime(), service, body, Call(rules_url(), origin=PLAYGROUND, screen=False)).response
    except Problem as problem:
        return _render(error="; ".join(i.diagnostics for i in problem.issues), **form)
    texts = _texts(body, service)
    cards = [_view(card, texts) for card in answer["cards"]]
    return _render(cards=cards, ran=True, degraded=answer.get("extension"), ran_service=service, **form)


def _service_for(body, service_id: str):
    """(the service to run, None) or (None, why not): the request's own hook by default; a service
    chosen on purpose must answer the hook the request names (the endpoint's 400, said here)."""
    hook = body.get("hook") if isinstance(body, dict) else None
    own = service_for_hook(hook) if isinstance(hook, str) else None
    is_bundle = isinstance(body, dict) and body.get("resourceType") == "Bundle"
    if service_id == FOLLOW_THE_REQUEST:
        if own is not None:
            return own, None
        if is_bundle:
            return None, "a FHIR Bundle names no hook: choose the service to run it through"
        if isinstance(hook, str) and hook:
            return None, (f"no service answers the hook {hook!r} (the services answer "
                          f"{', '.join(repr(s.hook) for s in SERVICES.values())})")
        return None, "the request names no hook: choose the service to run it through"
    service = SERVICES[service_id]
    if is_bundle or (isinstance(body, dict) and "hook" not in body):
        return service, None  # a Bundle, or a request naming no hook, takes the chosen service's hook
    if not isinstance(hook, str) or hook == service.hook:
        return service, None  # a malformed hook is the endpoint's 400
    other = f" ({own.id} answers it)" if own is not None else ""
    return None, (f"hook mismatch: the request names the hook {hook!r}{other}; the service chosen, {service.id}, "
                  f"answers {service.hook!r}. Choose \"the request's own hook\" or {own.id if own else 'another request'}.")


@blueprint.post("/playground/feedback")
def feedback():
    service_id = request.form.get("service", "")
    if service_id not in SERVICES:
        raise Problem.of(400, "invalid", "unknown service", "service")
    item = {"card": request.form.get("card", ""), "outcome": request.form.get("outcome", ""),
            "outcomeTimestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")}
    if item["outcome"] == "accepted":
        item["acceptedSuggestions"] = [{"id": request.form.get("suggestion", "")}]
    elif request.form.get("reason"):
        item["overrideReason"] = {"reason": {"code": request.form["reason"],
                                             "system": runtime().catalogue.contract["override_reason_system"]}}
    summary = runtime().store.store_feedback(service_id, parse_feedback({"feedback": [item]}))
    done = "accepted" if item["outcome"] == "accepted" else "dismissed"
    return redirect(url_for("playground.page", done=done, stored=summary["stored"]))


def _texts(body, service) -> dict:
    """(reference, element) → the text the pipeline read there (to show the evidence in place)."""
    return {key: source.text for key, source in record_texts(body, service).items()}


PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_ENDS_PARAGRAPH, _STARTS_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*\Z"), re.compile(r"\s*\n[ \t]*\n")
LONGEST_PARAGRAPH = 700  # characters; a longer paragraph is narrowed to the lines, then the words, about the quote


def _find(source: str, quote: str) -> tuple[int, int] | None:
    """Where the quote is in the source: exactly, else ignoring case and how whitespace is laid out
    (a hard-wrapped report breaks a quoted sentence across lines)."""
    if not quote.strip():
        return None
    at = source.find(quote)
    if at >= 0:
        return at, at + len(quote)
    pattern = r"\s+".join(re.escape(word) for word in quote.split())
    found = re.search(pattern, source, re.IGNORECASE)
    return (found.start(), found.end()) if found else None


def _paragraph(source: str, start: int, end: int) -> tuple[int, int]:
    """The paragraph (text between blank lines) around [start, end); narrowed when very long."""
    begin = 0
    for brk in PARAGRAPH_BREAK.finditer(source):
        if brk.end() <= start:
            begin = brk.end()
        elif brk.start() >= end:
            return _narrow(source, begin, brk.start(), start, end)
    return _narrow(source, begin, len(source), start, end)


def _narrow(source: str, begin: int, stop: int, start: int, end: int) -> tuple[int, int]:
    if stop - begin <= LONGEST_PARAGRAPH:
        return begin, stop
    line_begin = source.rfind("\n", begin, start) + 1 or begin
    line_stop = source.find("\n", end, stop)
    begin, stop = max(begin, line_begin), (stop if line_stop < 0 else line_stop)
    if stop - begin <= LONGEST_PARAGRAPH:
        return begin, stop
    room = max(0, (LONGEST_PARAGRAPH - (end - start)) // 2)
    left, right = max(begin, start - room), min(stop, end + room)
    while left > begin and not source[left - 1].isspace():
        left -= 1
    while right < stop and not source[right].isspace():
        right += 1
    return left, right


def _evidence_in_place(evidence: list[dict], texts: dict) -> list[dict]:
    """Each quote once, in the paragraph of the text it was read in, highlighted; quotes of one
    paragraph share it. A quote not found in the text (a code, say) stands alone, highlighted."""
    by_reference: dict[str, list[str]] = {}
    for (reference, _element), text in texts.items():
        by_reference.setdefault(reference, []).append(text)
    blocks: dict[tuple, dict] = {}
    for e in evidence:
        quote = e.get("text", "")
        source = texts.get((e.get("reference"), e.get("element")))
        candidates = [source] if source is not None else by_reference.get(e.get("reference"), [])
        for candidate in candidates:
            span = _find(candidate, quote)
            if span:
                begin, stop = _paragraph(candidate, *span)
                key = (e.get("reference"), e.get("element"), id(candidate), begin, stop)
                block = blocks.setdefault(key, {"reference": e.get("reference"), "element": e.get("element"),
                                                "text": candidate, "begin": begin, "stop": stop, "marks": []})
                block["marks"].append((span[0], span[1], e.get("assertion", "")))
                break
        else:
            key = (e.get("reference"), e.get("element"), None, quote)
            blocks.setdefault(key, {"reference": e.get("reference"), "element": e.get("element"), "text": quote,
                                    "begin": 0, "stop": len(quote), "marks": [(0, len(quote), e.get("assertion", ""))],
                                    "alone": True})
    out = []
    for block in blocks.values():
        marks = sorted(set(block["marks"]))
        out.append({"reference": block["reference"], "element": block["element"],
                    "assertions": ", ".join(dict.fromkeys(a for _, _, a in marks if a)),
                    "alone": block.get("alone", False),
                    "html": _highlighted(block["text"], block["begin"], block["stop"], marks)})
    return out


def _highlighted(text: str, begin: int, stop: int, marks: list[tuple[int, int, str]]) -> Markup:
    """text[begin:stop], escaped, the marked spans in <mark>; an ellipsis where it was cut."""
    parts, at = [], begin
    for start, end, assertion in marks:
        start = max(start, at)
        if end <= start:
            continue  # overlaps a span already marked
        parts.append(escape_text(text[at:start]))
        kind = "" if assertion in ("", "affirmed") else f' class="{escape_text(assertion)}" title="{escape_text(assertion)}"'
        parts.append(f"<mark{kind}>{escape_text(text[start:end])}</mark>")
        at = end
    parts.append(escape_text(text[at:stop]))
    body = "".join(parts).strip()
    if text[:begin].strip() and not _ENDS_PARAGRAPH.search(text[:begin]):
        body = "&hellip; " + body
    if text[stop:].strip() and not _STARTS_PARAGRAPH.match(text[stop:]):
        body += " &hellip;"
    return Markup(body.replace("\n", "<br>"))


def _change(action: dict, label: str) -> dict:
    """What one action of a suggestion changes, in its own words, less the code displays that the
    label already carries (the label says "Recode as S12.112A Nondisplaced ..."; the action then
    says "Change Condition/cond-1 to S12.112A")."""
    resource = action.get("resource") or {}
    description = action.get("description", "")
    for coding in (resource.get("code") or {}).get("coding", []):
        display = coding.get("display")
        if display and display in label:
            description = description.replace(f" {display}", "").replace(display, "")
    target = action.get("resourceId") or (f"{resource.get('resourceType')}/{resource['id']}"
                                          if resource.get("resourceType") and resource.get("id")
                                          else resource.get("resourceType", ""))
    return {"type": action.get("type", ""), "description": description.strip(),
            "target": "" if target and target in description else target}


def _view(card: dict, texts: dict) -> dict:
    payload = card["extension"]["spine-coding-cds"]
    suggestions = [{"label": markdown_inline(s["label"]), "uuid": s["uuid"],
                    "changes": [_change(a, s["label"]) for a in s.get("actions", [])]}
                   for s in card.get("suggestions", [])]
    return {"card": card, "payload": payload, "detail": markdown_html(card.get("detail", "")),
            "summary": markdown_inline(card.get("summary", "")),
            "evidence": _evidence_in_place(payload["evidence"], texts), "suggestions": suggestions}


def _render(**values):
    values.setdefault("cards", None)
    return render_template_string(
        _PAGE, vignettes=vignettes(), services=list(SERVICES.values()),
        reasons=runtime().catalogue.override_reasons(), product=runtime().catalogue.product,
        done=request.args.get("done"), **{k: v for k, v in values.items()})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ product }}: playground</title>
<style>
body{font-family:system-ui,sans-serif;max-width:62rem;margin:1.5rem auto;padding:0 1rem;color:#1d2330}
textarea{width:100%;height:9rem;font-family:monospace}.card{border-left:6px solid #999;padding:.6rem 1rem;margin:1rem 0;background:#fafbfd}
.card.info{border-color:#2b7bd3}.card.warning{border-color:#e3a008}.card.critical{border-color:#d33}
.ind{font-size:.8rem;text-transform:uppercase;font-weight:600}.info .ind{color:#2b7bd3}.warning .ind{color:#a86f00}.critical .ind{color:#d33}
.evidence{background:#fff;border:1px solid #e3e6ee;padding:.5rem;font-size:.9rem;margin:.3rem 0}mark{background:#ffe58a}
.error{background:#fde2e1;padding:.6rem}.done{background:#e4f6ea;padding:.6rem}code{background:#eef}
</style></head><body>
<h1>{{ product }} playground</h1>
{% if done %}<p class="done" id="done">Feedback {{ done }}: recorded.</p>{% endif %}
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/playground/run">
<p><label>Service <select name="service"><option value="" {% if not service_id %}selected{% endif %}>the request's own hook (a Bundle: choose one)</option>{% for s in services %}<option value="{{ s.id }}" {% if service_id == s.id %}selected{% endif %}>{{ s.hook }} ({{ s.id }})</option>{% endfor %}</select></label></p>
<p><label>Vignette <select name="vignette"><option value="">(choose)</option>{% for v, hook in vignettes.items() %}<option value="{{ v }}" {% if chosen == v %}selected{% endif %}>{{ v }} ({{ hook }})</option>{% endfor %}</select></label></p>
<p><label>or paste a hook request or a FHIR Bundle<br><textarea name="request">{{ pasted or '' }}</textarea></label></p>
<p><button type="submit" id="run">Run</button></p>
</form>
{% if ran %}<h2 id="result">{{ cards | length }} card{{ '' if cards | length == 1 else 's' }}</h2>
<p id="ran-service">Run through <code>{{ ran_service.id }}</code> ({{ ran_service.hook }}); recorded as playground traffic, left out of the <a href="/analytics">analytics</a> unless asked.</p>
{% if not cards %}<p id="silence">No cards: the codes match the documentation.</p>{% endif %}
{% if degraded %}<p>Not taken into account: <code>{{ degraded | tojson }}</code></p>{% endif %}
{% for v in cards %}{% set c = v.card %}
<div class="card {{ c.indicator }}"><span class="ind">{{ c.indicator }}</span> · {{ c.source.topic.display }} · <a href="{{ c.source.url }}">{{ v.payload.rule }}</a>
<h3 class="summary">{{ v.summary }}</h3>
<div class="detail">{{ v.detail }}</div>
<h4>Evidence</h4>{% for e in v.evidence %}<div class="evidence"><b>{{ e.reference }}</b> · {{ e.element }}{% if e.assertions %} · {{ e.assertions }}{% endif %}{% if e.alone and e.element != 'code' %} · not found in the text as read{% endif %}<p class="paragraph">{{ e.html }}</p></div>{% endfor %}
{% for s in v.suggestions %}<form method="post" action="/playground/feedback"><p class="suggestion"><b>{{ s.label }}</b>{% for ch in s.changes %}<br><code>{{ ch.type }}</code>{% if ch.target %} {{ ch.target }} —{% endif %} {{ ch.description }}{% endfor %}</p>
<input type="hidden" name="service" value="{{ ran_service.id }}"><input type="hidden" name="card" value="{{ c.uuid }}">
<input type="hidden" name="suggestion" value="{{ s.uuid }}"><input type="hidden" name="outcome" value="accepted">
<button type="submit" class="accept">Accept</button></form>{% endfor %}
<form method="post" action="/playground/feedback"><input type="hidden" name="service" value="{{ ran_service.id }}">
<input type="hidden" name="card" value="{{ c.uuid }}"><input type="hidden" name="outcome" value="overridden">
<select name="reason">{% for r in reasons %}<option value="{{ r.code }}">{{ r.display }}</option>{% endfor %}</select>
<button type="submit" class="dismiss">Dismiss</button></form>
</div>{% endfor %}{% endif %}
<p><small>Cards from the same pipeline as <code>POST /cds-services/{id}</code>; <a href="/analytics">analytics</a> · <a href="/rules">rules</a> · <a href="/openapi.json">OpenAPI</a></small></p>
</body></html>"""

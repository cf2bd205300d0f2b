"""The playground at `/`: run a vignette, a pasted hook request or a FHIR Bundle through a hook and
see the cards as an EHR shows them, with the evidence highlighted where it was read. Accepting or
dismissing a card posts real feedback. Server-rendered; no script, no CDN.

It runs the same pipeline as the hook endpoints, in process. It is on when authentication is off
(development), and off otherwise unless SPINE_CDS_PLAYGROUND=true: with it, anyone who reaches the
service could add feedback to the analytics.
"""
from __future__ import annotations

import html
import json
import uuid
from datetime import datetime, timezone

import markdown
from flask import Blueprint, redirect, render_template_string, request, url_for
from markupsafe import Markup

from ..bundles import hook_request_from_bundle
from ..config import PROJECT_DIR
from ..errors import Problem
from ..pipeline import answer_hook
from ..services import SERVICES
from .common import runtime
from .feedback import parse_feedback

blueprint = Blueprint("playground", __name__)
FIXTURES = PROJECT_DIR / "fhir_fixtures"


@blueprint.before_request
def only_when_enabled():
    rt = runtime()
    if not (rt.settings.playground or not rt.settings.auth_enabled):
        raise Problem.of(404, "not-found", "the playground is off (authentication is on; "
                                           "SPINE_CDS_PLAYGROUND=true turns it on)")


def vignettes() -> list[str]:
    return sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.glob("**/*.json"))


@blueprint.get("/")
def page():
    return _render()


@blueprint.post("/playground/run")
def run():
    service_id = request.form.get("service", "")
    service = SERVICES.get(service_id)
    if service is None:
        return _render(error=f"choose a service (not {service_id!r})")
    chosen = request.form.get("vignette", "")
    pasted = request.form.get("request", "").strip()
    try:
        if pasted:
            body = json.loads(pasted)
        elif chosen in vignettes():
            body = json.loads((FIXTURES / chosen).read_text())
        else:
            return _render(error="choose a vignette or paste a hook request or a FHIR Bundle")
    except ValueError as exc:
        return _render(error=f"the pasted text is not JSON ({exc})", pasted=pasted)
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        body = hook_request_from_bundle(body, service.hook)
    if isinstance(body, dict):
        body = dict(body, hook=service.hook, hookInstance=str(uuid.uuid4()))
    try:
        answer = answer_hook(runtime(), service, body)
    except Problem as problem:
        return _render(error="; ".join(i.diagnostics for i in problem.issues), pasted=pasted, chosen=chosen,
                       service_id=service_id)
    texts = _texts(body, service)
    cards = [_view(card, texts) for card in answer["cards"]]
    return _render(cards=cards, ran=True, pasted=pasted, chosen=chosen, service_id=service_id,
                   degraded=answer.get("extension"))


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


def _texts(body, service) -> dict[str, str]:
    """Reference → the text the pipeline read from that resource (to show the evidence in place):
    the same record assembly as the hook call, its parsed resources coming from the cache."""
    from ..deadline import Deadline
    from ..hook_request import parse_hook_request
    from ..record import build_record

    record = build_record(parse_hook_request(body, service), None, Deadline(runtime().settings.hook_deadline))
    out: dict[str, list[str]] = {}
    for source in record.texts:
        out.setdefault(source.reference, []).append(source.text)
    return {ref: "\n".join(parts) for ref, parts in out.items()}


def _highlighted(source: str, phrase: str) -> Markup:
    escaped_source, escaped_phrase = html.escape(source), html.escape(phrase)
    if escaped_phrase and escaped_phrase in escaped_source:
        escaped_source = escaped_source.replace(escaped_phrase, f"<mark>{escaped_phrase}</mark>", 1)
    return Markup(escaped_source.replace("\n", "<br>"))


def _detail_html(detail: str) -> Markup:
    safe = detail.replace("\\<", "&lt;").replace("\\>", "&gt;").replace("<", "&lt;")
    return Markup(markdown.markdown(safe))


def _view(card: dict, texts: dict[str, str]) -> dict:
    payload = card["extension"]["spine-coding-cds"]
    evidence = [dict(e, source=_highlighted(texts.get(e["reference"], e["text"]), e["text"]))
                for e in payload["evidence"]]
    suggestions = []
    for s in card.get("suggestions", []):
        changes = []
        for action in s.get("actions", []):
            resource = action.get("resource") or {}
            codings = [f"{c.get('code')} {c.get('display', '')}" for c in (resource.get("code") or {}).get("coding", [])
                       if "icd-10-cm" in c.get("system", "")]
            changes.append({"type": action["type"], "description": action["description"],
                            "target": action.get("resourceId") or resource.get("resourceType", ""),
                            "codes": ", ".join(codings)})
        suggestions.append({"label": s["label"], "uuid": s["uuid"], "changes": changes})
    return {"card": card, "payload": payload, "detail": _detail_html(card.get("detail", "")),
            "evidence": evidence, "suggestions": suggestions}


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
<p><label>Service <select name="service">{% for s in services %}<option value="{{ s.id }}" {% if service_id == s.id %}selected{% endif %}>{{ s.hook }} ({{ s.id }})</option>{% endfor %}</select></label></p>
<p><label>Vignette <select name="vignette"><option value="">(choose)</option>{% for v in vignettes %}<option value="{{ v }}" {% if chosen == v %}selected{% endif %}>{{ v }}</option>{% endfor %}</select></label></p>
<p><label>or paste a hook request or a FHIR Bundle<br><textarea name="request">{{ pasted or '' }}</textarea></label></p>
<p><button type="submit" id="run">Run</button></p>
</form>
{% if ran %}<h2 id="result">{{ cards | length }} card{{ '' if cards | length == 1 else 's' }}</h2>
{% if not cards %}<p id="silence">No cards: the codes match the documentation.</p>{% endif %}
{% if degraded %}<p>Not taken into account: <code>{{ degraded | tojson }}</code></p>{% endif %}
{% for v in cards %}{% set c = v.card %}
<div class="card {{ c.indicator }}"><span class="ind">{{ c.indicator }}</span> · {{ c.source.topic.display }} · <a href="{{ c.source.url }}">{{ v.payload.rule }}</a>
<h3 class="summary">{{ c.summary }}</h3>
<div class="detail">{{ v.detail }}</div>
<h4>Evidence</h4>{% for e in v.evidence %}<div class="evidence"><b>{{ e.reference }}</b> · {{ e.element }} · {{ e.assertion }}<br>{{ e.source }}</div>{% endfor %}
{% for s in v.suggestions %}<form method="post" action="/playground/feedback"><p><b>{{ s.label }}</b>{% for ch in s.changes %}<br><code>{{ ch.type }}</code> {{ ch.target }}{% if ch.codes %}: {{ ch.codes }}{% endif %} — {{ ch.description }}{% endfor %}</p>
<input type="hidden" name="service" value="{{ service_id }}"><input type="hidden" name="card" value="{{ c.uuid }}">
<input type="hidden" name="suggestion" value="{{ s.uuid }}"><input type="hidden" name="outcome" value="accepted">
<button type="submit" class="accept">Accept</button></form>{% endfor %}
<form method="post" action="/playground/feedback"><input type="hidden" name="service" value="{{ service_id }}">
<input type="hidden" name="card" value="{{ c.uuid }}"><input type="hidden" name="outcome" value="overridden">
<select name="reason">{% for r in reasons %}<option value="{{ r.code }}">{{ r.display }}</option>{% endfor %}</select>
<button type="submit" class="dismiss">Dismiss</button></form>
</div>{% endfor %}{% endif %}
<p><small>Cards from the same pipeline as <code>POST /cds-services/{id}</code>; <a href="/analytics">analytics</a> · <a href="/rules">rules</a> · <a href="/openapi.json">OpenAPI</a></small></p>
</body></html>"""

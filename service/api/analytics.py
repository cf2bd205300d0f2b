"""GET /analytics (a page a CDI lead reads at a glance) and GET /analytics.csv (per-rule figures).

Filters: ?from=YYYY-MM-DD&to=YYYY-MM-DD&service=<id>; playground runs are left out unless
?include=playground. Protected like the hook endpoints when trusted
issuers are configured (a JWT whose aud is this URL). Server-rendered, no script, no CDN."""
from __future__ import annotations

from datetime import date

from flask import Blueprint, Response, render_template_string, request

from ..analytics import Filters, build, include_playground
from ..errors import Problem
from ..services import SERVICES
from .common import require_jwt, runtime

blueprint = Blueprint("analytics", __name__)
blueprint.before_request(require_jwt)


def _filters() -> Filters:
    def day(name: str) -> date | None:
        value = request.args.get(name, "").strip()
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise Problem.of(400, "invalid", f"{name} must be a date, YYYY-MM-DD", name) from None

    service = request.args.get("service", "").strip() or None
    if service and service not in SERVICES:
        raise Problem.of(400, "invalid", f"no service {service!r}", "service")
    return Filters(day("from"), day("to"), service, include_playground(request.args))


@blueprint.get("/analytics.csv")
def analytics_csv():
    report = build(runtime().store, _filters())
    return Response(report.csv(), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=spine-cds-cards.csv"})


@blueprint.get("/analytics")
def analytics_page():
    filters = _filters()
    report = build(runtime().store, filters)
    peak = max([r.issued + r.silent + r.suppressed for r in report.rules] + [1])
    day_peak = max([live + silent + suppressed for _, live, silent, suppressed in report.by_day] + [1])
    return render_template_string(_PAGE, r=report, peak=peak, day_peak=day_peak, services=sorted(SERVICES),
                                  f=filters, query=request.query_string.decode(),
                                  product=runtime().catalogue.product)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ product }}: card analytics</title>
<style>
body{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#1d2330}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #dde;padding:.35rem .5rem;text-align:right}
td:first-child,th:first-child{text-align:left}.bar{fill:#3b6fd8}.silent{fill:#b9c3d6}.acc{fill:#2e9d5b}
.suppressed{fill:#e0b44c}.kpi{display:inline-block;margin-right:2rem}.kpi b{font-size:1.6rem;display:block}form{margin:1rem 0}
</style></head><body>
<h1>Card analytics</h1>
<form method="get" action="/analytics">
 from <input type="date" name="from" value="{{ f.start or '' }}"> to <input type="date" name="to" value="{{ f.end or '' }}">
 service <select name="service"><option value="">all</option>{% for s in services %}
 <option value="{{ s }}" {% if f.service == s %}selected{% endif %}>{{ s }}</option>{% endfor %}</select>
 <label><input type="checkbox" name="include" value="playground" {% if f.include_playground %}checked{% endif %}> include playground runs</label>
 <button type="submit">Filter</button> <a href="/analytics.csv?{{ query }}">CSV</a>
</form>
<p id="origin">{% if f.include_playground %}EHR traffic and playground runs (<code>?include=playground</code>).{% else %}EHR traffic only{% if r.playground_cards %}: {{ r.playground_cards }} card{{ '' if r.playground_cards == 1 else 's' }} of playground runs left out{% endif %} (<code>?include=playground</code> counts them).{% endif %}</p>
{% set t = r.totals %}
<p><span class="kpi"><b id="issued">{{ t.issued }}</b>cards shown</span>
<span class="kpi"><b id="accepted">{{ t.accepted }}</b>accepted{% if t.issued %} ({{ (100 * t.accepted / t.issued) | round(1) }} %){% endif %}</span>
<span class="kpi"><b id="overridden">{{ t.overridden }}</b>overridden</span>
<span class="kpi"><b id="unanswered">{{ t.unanswered }}</b>no response</span>
<span class="kpi"><b id="silent">{{ t.silent }}</b>silent (not shown)</span>
<span class="kpi"><b id="suppressed">{{ t.suppressed }}</b>suppressed (already answered)</span></p>

<h2>By rule</h2>
<table><tr><th>rule</th><th>kind</th><th>shown</th><th>silent</th><th>suppressed</th><th>accepted</th><th>overridden</th><th>no response</th><th>acceptance</th><th></th></tr>
{% for x in r.rules %}<tr><td><a href="/rules/{{ x.rule }}">{{ x.rule }}</a></td><td>{{ x.kind }}</td><td>{{ x.issued }}</td><td>{{ x.silent }}</td><td>{{ x.suppressed }}</td>
<td>{{ x.accepted }}</td><td>{{ x.overridden }}</td><td>{{ x.unanswered }}</td>
<td>{% if x.rate(x.accepted) is not none %}{{ (100 * x.rate(x.accepted)) | round(1) }} %{% else %}-{% endif %}</td>
<td><svg width="200" height="14" role="img" aria-label="{{ x.issued }} shown, {{ x.accepted }} accepted, {{ x.silent }} silent, {{ x.suppressed }} suppressed">
<rect class="bar" x="0" y="0" height="14" width="{{ 200 * x.issued / peak }}"/>
<rect class="acc" x="0" y="0" height="14" width="{{ 200 * x.accepted / peak }}"/>
<rect class="silent" x="{{ 200 * x.issued / peak }}" y="0" height="14" width="{{ 200 * x.silent / peak }}"/>
<rect class="suppressed" x="{{ 200 * (x.issued + x.silent) / peak }}" y="0" height="14" width="{{ 200 * x.suppressed / peak }}"/></svg></td></tr>
{% else %}<tr><td colspan="10">No cards in this period.</td></tr>{% endfor %}</table>

<h2>Over time</h2>
<svg width="640" height="120" role="img" aria-label="cards per day">{% for day, live, silent, suppressed in r.by_day %}
{% set w = 620 / (r.by_day | length) %}<rect class="bar" x="{{ loop.index0 * w }}" y="{{ 110 - 100 * live / day_peak }}" width="{{ w * 0.8 }}" height="{{ 100 * live / day_peak }}"><title>{{ day }}: {{ live }} shown, {{ silent }} silent, {{ suppressed }} suppressed</title></rect>
<rect class="silent" x="{{ loop.index0 * w }}" y="{{ 110 - 100 * (live + silent) / day_peak }}" width="{{ w * 0.8 }}" height="{{ 100 * silent / day_peak }}"/>
<rect class="suppressed" x="{{ loop.index0 * w }}" y="{{ 110 - 100 * (live + silent + suppressed) / day_peak }}" width="{{ w * 0.8 }}" height="{{ 100 * suppressed / day_peak }}"/>{% endfor %}</svg>
<p>{% for day, live, silent, suppressed in r.by_day %}{{ day }}: {{ live }}{% if silent %} (+{{ silent }} silent){% endif %}{% if suppressed %} (+{{ suppressed }} suppressed){% endif %}{% if not loop.last %} · {% endif %}{% endfor %}</p>

<h2>By kind and service</h2>
<table><tr><th>kind</th><th>shown</th></tr>{% for k, n in r.by_kind | dictsort %}<tr><td>{{ k }}</td><td>{{ n }}</td></tr>{% endfor %}</table>
<table><tr><th>service</th><th>shown</th></tr>{% for k, n in r.by_service | dictsort %}<tr><td>{{ k }}</td><td>{{ n }}</td></tr>{% endfor %}</table>

<h2>Override reasons</h2>
<table><tr><th>reason</th><th>count</th></tr>{% for code, n in r.override_reasons %}<tr><td>{{ code }}</td><td>{{ n }}</td></tr>{% else %}<tr><td colspan="2">None yet.</td></tr>{% endfor %}</table>

<h2>Suggestions chosen</h2>
<table><tr><th>rule</th><th>suggestion (position offered)</th><th>accepted</th></tr>{% for rule, position, n in r.suggestions_chosen %}<tr><td>{{ rule }}</td><td>{{ position or "unknown" }}</td><td>{{ n }}</td></tr>{% else %}<tr><td colspan="3">None yet.</td></tr>{% endfor %}</table>
<p><small>{{ product }} · figures from the cards the service issued and the feedback EHRs sent; no clinical text is stored.</small></p>
</body></html>"""

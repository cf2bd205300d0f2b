"""A page per rule (the cards' `source.url`), rendered from the same card templates in cards/."""
from __future__ import annotations

from flask import Blueprint, render_template_string

from ..errors import Problem
from .common import runtime

blueprint = Blueprint("rule_pages", __name__)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ t.rule }}: {{ t.title }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1d2330}
code,pre{background:#f3f4f7;border-radius:4px}pre{padding:.8rem;white-space:pre-wrap}
.kind{display:inline-block;padding:.1rem .5rem;border-radius:1rem;background:#e7ecf7;font-size:.9rem}
.critical{background:#fde2e1}.warning{background:#fff1d6}.info{background:#e3f1fb}
table{border-collapse:collapse}td,th{border-bottom:1px solid #dde;padding:.3rem .6rem;text-align:left}
</style></head><body>
<p><a href="{{ url_for('rule_pages.index') }}">All rules</a> &middot; {{ product }}</p>
<h1>{{ t.rule }} &mdash; {{ t.title }}</h1>
<p><span class="kind">{{ kind_display }}</span> <span class="kind {{ t.indicator }}">{{ t.indicator }}</span></p>
<h2>What it checks</h2><p>{{ t.about }}</p>
<h2>Source</h2><p>{{ t.source }}</p>
<h2>What the card says</h2>
<p>Summary:</p><pre>{{ t.text.summary }}</pre>
<p>Detail (markdown, with the evidence quoted):</p><pre>{{ t.text.detail.strip() }}</pre>
{% if t.text.suggestions %}<p>Suggestions:</p><ul>{% for k, v in t.text.suggestions.items() %}<li><code>{{ v }}</code></li>{% endfor %}</ul>{% endif %}
{% if t.text.variants %}<h2>Variants</h2>{% for name, v in t.text.variants.items() %}<h3>{{ name }}</h3>
{% if v.summary %}<pre>{{ v.summary }}</pre>{% endif %}{% endfor %}{% endif %}
<h2>Declining the card</h2><ul>{% for r in reasons %}<li>{{ r.display }} (<code>{{ r.code }}</code>)</li>{% endfor %}</ul>
<p><small>Wording from <code>cards/{{ t.rule }}.toml</code>; codes from the {{ release }}.</small></p>
</body></html>"""

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ product }}: rules</title>
<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}
td,th{border-bottom:1px solid #dde;padding:.3rem .6rem;text-align:left}table{border-collapse:collapse}</style>
</head><body><h1>{{ product }}: the coding rules</h1>
<table><tr><th>rule</th><th>card</th><th>what it checks</th></tr>
{% for t in templates %}<tr><td><a href="{{ url_for('rule_pages.page', rule_id=t.rule) }}">{{ t.rule }}</a></td>
<td>{{ t.kind }}</td><td>{{ t.title }}</td></tr>{% endfor %}</table></body></html>"""


@blueprint.get("/rules")
def index():
    rt = runtime()
    return render_template_string(_INDEX, product=rt.catalogue.product,
                                  templates=[rt.catalogue.templates[k] for k in sorted(rt.catalogue.templates)])


@blueprint.get("/rules/<rule_id>")
def page(rule_id: str):
    rt = runtime()
    template = rt.catalogue.templates.get(rule_id)
    if template is None:
        raise Problem.of(404, "not-found", f"no rule {rule_id!r}; the rules are listed at GET /rules")
    return render_template_string(
        _PAGE, t=template, product=rt.catalogue.product, kind_display=rt.catalogue.kinds[template.kind]["display"],
        reasons=rt.catalogue.override_reasons(), release=rt.terminology.release,
    )

"""The rule pages (every card's source.url): what a rule checks, its source, and worked examples
rendered from the vignettes (the real cards), never template source.

The card wording and the rules change often: these tests check the structure of the pages and the
absence of template syntax, not the wording of a card."""
from __future__ import annotations

import json
import re
import tomllib

import pytest

from service.api import rule_pages
from service.pipeline import Answer
from service.api.rule_pages import markdown_html

from .support import FIXTURES

TEMPLATE_SYNTAX = ("{{", "{%", "{#", "%}", "#}")
with open(FIXTURES / "vignettes.toml", "rb") as _fh:
    VIGNETTES = tomllib.load(_fh)["vignette"]


def _catalogue(app):
    return app.extensions["spine_cds"].catalogue


def _page(client, rule_id: str) -> str:
    response = client.get(f"/rules/{rule_id}")
    assert response.status_code == 200, rule_id
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def _examples(page: str) -> list[str]:
    return re.findall(r'<section class="example (?:fires|silent)".*?</section>', page, re.S)


def test_no_page_shows_template_syntax(app, client):
    index = client.get("/rules").get_data(as_text=True)
    assert not [t for t in TEMPLATE_SYNTAX if t in index]
    for rule_id in _catalogue(app).templates:
        page = _page(client, rule_id)
        assert not [t for t in TEMPLATE_SYNTAX if t in page], rule_id
        assert "What it checks" in page and "<h2>Source</h2>" in page


def test_the_index_lists_every_rule_with_its_title_and_kind(app, client):
    index = client.get("/rules").get_data(as_text=True)
    catalogue = _catalogue(app)
    rows = re.findall(r"<tr><td>.*?</tr>", index, re.S)
    assert len(rows) == len(catalogue.templates)
    for rule_id, template in catalogue.templates.items():
        row = next(r for r in rows if f'href="/rules/{rule_id}"' in r)
        assert template.title.replace("'", "&#39;") in row
        assert catalogue.kinds[template.kind]["display"] in row and template.indicator in row


def test_every_rule_with_a_vignette_shows_a_real_card_from_it(app, client):
    """Each rule that a vignette names shows at least one worked example card, and at most ~3."""
    for rule_id in _catalogue(app).templates:
        named = [v for v in VIGNETTES if rule_id in {e.get("rule") for e in v["expect"]}]
        page = _page(client, rule_id)
        examples = _examples(page)
        assert len(examples) <= rule_pages.MAX_EXAMPLES, rule_id
        if not named:
            continue
        firing = [x for x in examples if 'class="example fires"' in x]
        assert firing, f"{rule_id}: no worked example"
        for example in firing:
            vignette = next(v for v in VIGNETTES if f'id="example-{v["id"]}"' in example)
            assert rule_id in {e.get("rule") for e in vignette["expect"]}
            assert vignette["about"].replace('"', "&#34;").replace("'", "&#39;")[:40] in example
            assert re.search(r'<div class="card (info|warning|critical)"><span class="ind">', example)
            assert re.search(r'<h4 class="summary">[^<{]+</h4>', example)
            assert '<div class="detail"><p>' in example


def test_a_worked_example_shows_detail_suggestions_and_dated_evidence(client):
    page = _page(client, "SPL-TRAUMA")
    example = next(x for x in _examples(page) if 'id="example-spl-trauma-fires-nondisplaced-type-ii-dens"' in x)
    assert "<strong>" in example and "<blockquote>" in example  # the detail's markdown, rendered
    assert re.search(r'<ul class="suggestions"><li>[^<]*S12\.112A', example)
    evidence = re.search(r'<ul class="evidence">(.*?)</ul>', example, re.S).group(1)
    assert "Acute nondisplaced type II dens fracture." in evidence
    assert re.search(r"<code>DiagnosticReport/dr-1</code> conclusion, \d{4}-\d{2}-\d{2}", evidence)


def test_a_silent_near_miss_is_shown_with_its_about(client):
    page = _page(client, "SPL-TRAUMA")
    silent = [x for x in _examples(page) if 'class="example silent"' in x]
    assert len(silent) == 1
    vignette_id = re.search(r'id="example-([^"]+)"', silent[0]).group(1)
    vignette = next(v for v in VIGNETTES if v["id"] == vignette_id)
    assert vignette_id.startswith("spl-trauma-silent-") and "SPL-TRAUMA" not in {e.get("rule") for e in vignette["expect"]}
    assert vignette["about"][:30] in silent[0] and "No SPL-TRAUMA card" in silent[0]
    assert 'class="card ' not in silent[0]


def test_the_coders_rationale_is_shown_when_a_template_has_one(app, client):
    template = _catalogue(app).templates["SPL-TRAUMA"]
    had = "rationale" in template.text
    saved = template.text.get("rationale")
    template.text["rationale"] = "Denial risk: **M43.11** for an acute fracture;\nMS-DRG 551/552 <vs> 073."
    try:
        page = _page(client, "SPL-TRAUMA")
        section = re.search(r'<h2>For coders</h2><div id="rationale">(.*?)</div>', page, re.S).group(1)
        assert "<strong>M43.11</strong>" in section and "&lt;vs&gt;" in section
        del template.text["rationale"]
        assert "For coders" not in _page(client, "SPL-TRAUMA")
    finally:
        if had:
            template.text["rationale"] = saved
        else:
            template.text.pop("rationale", None)


def test_examples_run_once_per_process_and_write_nothing(app, client, monkeypatch):
    calls = []
    real = rule_pages.answer_hook

    def counting(runtime, service, body, call):
        calls.append(body["hookInstance"])
        return real(runtime, service, body, call)

    monkeypatch.setattr(rule_pages, "answer_hook", counting)
    first = _page(client, "SPL-TRAUMA")
    ran = len(calls)
    assert ran >= 1
    assert _page(client, "SPL-TRAUMA").count('class="example ') == first.count('class="example ')
    assert len(calls) == ran  # cached
    store = app.extensions["spine_cds"].store
    assert store.count("issued_cards") == 0 and store.count("hook_timeouts") == 0  # a page view is no hook call


def test_a_vignette_that_raises_or_times_out_is_left_out_never_a_500(app, client, monkeypatch):
    real = rule_pages.answer_hook

    def flaky(runtime, service, body, call):
        if "nondisplaced-type-ii-dens" in _vignette_of(body):
            raise RuntimeError("boom")
        if "c1-c2-subluxation-after-fall" in _vignette_of(body):
            return Answer({"cards": []}, timed_out=True)
        return real(runtime, service, body, call)

    monkeypatch.setattr(rule_pages, "answer_hook", flaky)
    page = _page(client, "SPL-TRAUMA")
    assert "example-spl-trauma-fires-nondisplaced-type-ii-dens" not in page
    assert "example-spl-trauma-fires-c1-c2-subluxation-after-fall" not in page
    assert 'class="example fires"' in page  # the other SPL-TRAUMA vignettes still make examples
    assert app.extensions["spine_cds"].store.count("hook_timeouts") == 0


def _vignette_of(body) -> str:
    """The vignette a request was built from (the resource ids are the same in every vignette):
    found by comparing the prefetch with the files."""
    for path in (FIXTURES / "vignettes").glob("spl-trauma-*.json"):
        if json.loads(path.read_text())["prefetch"] == body["prefetch"]:
            return path.stem
    return ""


def test_all_examples_failing_still_renders_the_page(client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no pipeline")

    monkeypatch.setattr(rule_pages, "answer_hook", broken)
    page = _page(client, "RAD-CAUSE")
    assert 'id="no-examples"' in page and not [t for t in TEMPLATE_SYNTAX if t in page]


# ------------------------------------------------------------------ markdown, safely
@pytest.mark.parametrize("detail, expected", [
    ("**M43.11** excludes it", "<p><strong>M43.11</strong> excludes it</p>"),
    ("The record documents:\n> \"quote\" (DiagnosticReport/dr-1)\n\nCode it.",
     "<p>The record documents:</p>\n<blockquote><p>&quot;quote&quot; (DiagnosticReport/dr-1)</p></blockquote>\n"
     "<p>Code it.</p>"),
    ("Document:\n- imaging\n- etiology\n", "<p>Document:</p>\n<ul><li>imaging</li><li>etiology</li></ul>"),
    ("one\ntwo\n\nthree", "<p>one two</p>\n<p>three</p>"),
    ("1. first\n2. second", "<ol><li>first</li><li>second</li></ol>"),
    ("an *emphasis* and `M54.1-`", "<p>an <em>emphasis</em> and <code>M54.1-</code></p>"),
])
def test_markdown_subset(detail, expected):
    assert str(markdown_html(detail)) == expected


@pytest.mark.parametrize("chart_text", [
    "<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "[click](javascript:alert(1))",
    "![x](http://evil/x.png)", "<a href='http://evil'>x</a>", "&lt;b&gt;", "{{ current }} {% if %} {# x #}",
])
def test_chart_text_is_data_never_markup(chart_text):
    from service.cards import escape_markdown

    for text in (chart_text, escape_markdown(chart_text)):
        out = str(markdown_html(f'> "{text}" (DocumentReference/n-1)'))
        tags = set(re.findall(r"</?([a-z0-9]+)", out))
        assert tags <= {"p", "blockquote", "strong", "em", "code"}, out
        assert "<a" not in out and "<img" not in out and "<script" not in out
        assert not [t for t in TEMPLATE_SYNTAX if t in out]


def test_escaped_markdown_reads_back_as_the_chart_text():
    from service.cards import escape_markdown

    text = "C1-C2 *grade* 2 <10% [sic] #3 a_b"
    out = str(markdown_html(escape_markdown(text)))
    assert out == "<p>C1-C2 *grade* 2 &lt;10% [sic] #3 a_b</p>"


def test_feedback_on_a_patients_card_never_hides_a_worked_example(client):
    """The vignettes share a patient and subjects; accepting a card in the playground (real
    feedback, which suppresses that rule's card for the patient) leaves the rule page as it was."""
    page = client.post("/playground/run", data={"service": "spine-coding-encounter-sign",
                                                "vignette": "vignettes/spl-trauma-fires-nondisplaced-type-ii-dens.json"})
    text = page.get_data(as_text=True)
    card = re.search(r'name="card" value="([^"]+)"', text).group(1)
    suggestion = re.search(r'name="suggestion" value="([^"]+)"', text).group(1)
    client.post("/playground/feedback", data={"service": "spine-coding-encounter-sign", "card": card,
                                              "suggestion": suggestion, "outcome": "accepted"})
    firing = [x for x in _examples(_page(client, "SPL-TRAUMA")) if 'class="example fires"' in x]
    assert firing

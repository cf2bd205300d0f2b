"""The HTML reader (service/clinical_text.html_to_text): text as the sentence splitter expects it, from any
markup, in bounded time, never an exception but the deadline's."""
from __future__ import annotations

import base64
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.clinical_text import MAX_MARKUP_CHARS, decode_text, html_to_text
from service.deadline import Deadline, DeadlineExceeded


@pytest.mark.parametrize("markup, text", [
    ("<p>No fracture.</p><p>C1-C2 anterolisthesis.</p>", "No fracture.\nC1-C2 anterolisthesis."),
    ("Line one<br>Line two<br/>Line three", "Line one\nLine two\nLine three"),
    ("<ul><li>PT 8 weeks</li><li>gabapentin</li></ul>", "PT 8 weeks\ngabapentin"),
    ("<table><tr><td>Motor</td><td>5/5</td></tr><tr><th>Reflexes</th><td>2+</td></tr></table>",
     "Motor\n5/5\nReflexes\n2+"),
    ("<h2>IMPRESSION:</h2>Grade 1 slip.", "IMPRESSION:\nGrade 1 slip."),
    ("<p><b>Plan:</b> continue <i>PT</i></p>", "Plan: continue PT"),  # inline tags join their text
    ("<p>hard-wrapped\nline   with  spaces</p>", "hard-wrapped\nline with spaces"),  # line breaks kept
    ("<head><title>T</title><style>p{}</style></head><script>var a = '<p>x</p>'</script>Body",
     "Body"),
    ("a &amp; b &lt;c&gt; &#x41;&#66; &nbsp;&bogus;", "a & b <c> AB \xa0&bogus;"),
    ("pain < 5/10, > 3 yesterday", "pain < 5/10, > 3 yesterday"),  # the old scanner dropped this
    ("before<!-- a comment -->after", "beforeafter"),
    ("<![CDATA[x]]>text", "text"),
    ("text<p", "text"),  # an unclosed tag at the end: its rest is inside it
    ("text<!-- never closed <p>more</p>", "text"),
    ("<p>unclosed<p>next<li>item", "unclosed\nnext\nitem"),
    ("", ""),
    ("<![<![<![", ""),  # broke html.parser (issue 11)
])
def test_text_as_the_sentence_splitter_expects_it(markup, text):
    assert html_to_text(markup) == text


def test_bad_characters_are_no_exception_and_no_surrogate_in_the_text():
    assert html_to_text("a\x00b<p>\x00</p>") == "ab"
    text = html_to_text("a\ud800<p>\udfff</p>b")
    text.encode("utf-8")  # a lone surrogate would break the card's JSON
    assert text.startswith("a") and text.endswith("b")
    assert decode_text("text/html", b"No \xff\xfe fracture <p>C1\xc3(</p>") == "No \ufffd\ufffd fracture \nC1\ufffd("  # as before: a space kept before a break


def test_deep_nesting_keeps_the_text_in_linear_time():
    for depth in (300, 80_000):  # past libxml2's 256 (lxml lost the text) and lexbor's quadratic range
        markup = "<p>Before.</p>" + "<div>" * depth + "Deep text." + "</div>" * depth + "<p>After.</p>"
        started = time.perf_counter()
        assert html_to_text(markup) == "Before.\nDeep text.\nAfter."
        assert time.perf_counter() - started < 5  # about 0.1 s here; quadratic would be minutes


def _cost(markup: str) -> float:
    """CPU seconds (not wall time: the cores are shared), the best of 5."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        html_to_text(markup)
        best = min(best, time.process_time() - started)
    return best


@pytest.mark.parametrize("unit", ["<div>", "</p><div>", "<b><p>", "<a><table><b>x", "<![", "&amp;", "<a "])
def test_cost_grows_linearly_with_hostile_markup(unit):
    small, large = unit * (MAX_MARKUP_CHARS // 4 // len(unit)), unit * (MAX_MARKUP_CHARS // len(unit))
    ratio = _cost(large) / max(_cost(small), 2e-3)  # a floor of 2 ms: below it, fixed costs and noise
    assert ratio < 10, f"{unit!r}: 4x the markup cost {ratio:.1f}x"  # quadratic would be 16x


def test_markup_is_cut_at_the_cap():
    markup = "<p>" + "word " * (MAX_MARKUP_CHARS // 5) + "</p><p>AFTER THE CAP</p>"
    text = html_to_text(markup)
    assert text.startswith("word word") and "AFTER THE CAP" not in text


def test_the_deadline_stops_a_long_walk():
    class Counting(Deadline):
        checks = 0

        def check(self):
            Counting.checks += 1
            if Counting.checks > 3:
                raise DeadlineExceeded()

    with pytest.raises(DeadlineExceeded):
        html_to_text("<div>x</div>" * 100_000, Counting(10))
    assert Counting.checks == 4  # checked before the parse and inside the walk, not only at the end


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(),
    st.lists(st.sampled_from(["<", ">", "</", "<!--", "-->", "<![", "]]>", "&", ";", "#", "x", "p", "div",
                              "table", "td", "script", "svg", "math", "template", "select", "\x00", "\ud800",
                              " ", "\n", "=", '"', "'", "&amp", "&#", "<p>", "</p>", "<b>", "</b>"]),
             max_size=400).map("".join),
))
def test_any_text_is_read_without_an_exception_in_bounded_time(markup):
    started = time.perf_counter()
    text = html_to_text(markup)
    assert isinstance(text, str) and time.perf_counter() - started < 1
    text.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["text/html", "text/html; charset=utf-16", "application/xhtml+xml",
                                                   "text/html; charset=shift_jis", "text/html; charset=bogus"]))
def test_any_bytes_are_read_without_an_exception(data, content_type):
    text = decode_text(content_type, data)
    assert isinstance(text, str)
    text.encode("utf-8")


def test_an_html_attachment_over_the_cap_is_reported_as_read_in_part():
    from service.record import PatientRecord, _attachment_text

    record = PatientRecord("encounter-sign", "h", "p", None)
    big = base64.b64encode(b"<p>" + b"word " * (MAX_MARKUP_CHARS // 5) + b"</p><p>AFTER THE CAP</p>").decode()
    text = _attachment_text(record, "DocumentReference/n1", "content[0].attachment",
                            {"contentType": "text/html", "data": big}, None)
    assert text.startswith("word") and "AFTER THE CAP" not in text
    assert [p.problem for p in record.skipped] == [f"HTML attachment over {MAX_MARKUP_CHARS} bytes: only its beginning read"]
    small = base64.b64encode(b"<p>No fracture.</p>").decode()
    assert _attachment_text(record, "DocumentReference/n2", "content[0].attachment",
                            {"contentType": "text/html", "data": small}, None) == "No fracture."
    assert len(record.skipped) == 1

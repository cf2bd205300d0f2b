"""Chart text is data, never markup (issue 11): markdown and HTML injection from every chart field
that reaches a card, spreadsheet formulas in the CSVs, forged log lines and element names in the
log, and malformed codes. Every check renders what a reader would see (markdown-it-py for a card's
markdown, the HTML parser for pages) and also checks that the payload did reach the card, as text:
a test whose payload never arrived would pass for nothing."""
from __future__ import annotations

import base64
import html
import copy
import csv
import io
import json
import logging
import re
from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from service import escaping
from service.services import service_for_hook

from .support import FIXTURES, fresh

PAYLOADS = {
    "link": "[x](javascript:alert(1))",
    "image": "![](http://evil/x.png)",
    "html": "<img src=x onerror=alert(1)>",
    "script": "<script>alert(1)</script>",
    "backtick": "`rm -rf` ``x``",
    "heading": "\n# heading",
    "table": "| a | b |\n|---|---|",
    "blocks": "\n> quoted\n- item\n1. one\n===",
    "email": "write to evil@evil.example or mailto:x@evil.example",
}
# What a reader must see of each payload, as text (a line break in the chart becomes a space).
VISIBLE = {name: " ".join(p.split()) for name, p in PAYLOADS.items()}
VISIBLE["heading"], VISIBLE["table"], VISIBLE["blocks"] = "# heading", "| a | b |", "> quoted - item 1. one ==="

# GitHub-flavoured markdown as EHRs render a card: CommonMark with raw HTML on, tables, strikethrough.
MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
ALLOWED_TAGS = {"p", "strong", "em", "code", "blockquote", "ul", "ol", "li", "br"}


class _Html(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parsed(html_text: str) -> _Html:
    parser = _Html()
    parser.feed(html_text)
    parser.close()
    return parser


def rendered(markdown_text: str) -> _Html:
    """What a markdown renderer makes of a card's text: its tags and its visible text."""
    return parsed(MARKDOWN.render(markdown_text))


def assert_text_only(markdown_text: str, where: str) -> str:
    """The markdown renders to paragraphs, quotes, lists and emphasis only (no link, image, raw HTML,
    heading, table, code block), carries no autolink (`scheme://`, `www.`, `a@b` unescaped), and its text
    is returned (spaces normalised) for the reach check."""
    out = rendered(markdown_text)
    tags = {tag for tag, _ in out.tags}
    assert tags <= ALLOWED_TAGS, f"{where}: markup from the chart: {sorted(tags - ALLOWED_TAGS)}\n{markdown_text}"
    assert not re.search(r"(?<!\\)://|(?i:\bwww\.)|[\w.+-](?<!\\)@[\w-]", markdown_text), \
        f"{where}: a live autolink\n{markdown_text}"
    return " ".join("".join(out.text).split())


def card_texts(card: dict) -> list[tuple[str, str]]:
    return [("summary", card["summary"]), ("detail", card.get("detail", ""))] + [
        (f"suggestions[{n}].label", s["label"]) for n, s in enumerate(card.get("suggestions", []))]


def check_cards(cards: list[dict], payload_name: str, where: str, must_reach: bool = True,
                visible: str | None = None) -> None:
    assert cards or not must_reach, f"{where}: no card"
    visible = visible or VISIBLE[payload_name]
    seen = []
    for n, card in enumerate(cards):
        for field, text in card_texts(card):
            seen.append(assert_text_only(text, f"{where} card {n} {field}"))
        assert len(card["summary"]) < 140, f"{where}: summary of {len(card['summary'])} characters"
    if must_reach:
        # (codes are read upper-cased, so case is not compared)
        assert any(visible.casefold() in text.casefold() for text in seen), \
            f"{where}: the payload {payload_name!r} did not reach the card as text: {seen}"


# ------------------------------------------------------------------ building hostile requests
def _load(name: str) -> dict:
    return fresh(json.loads((FIXTURES / name).read_text()))


def _resources(body: dict, resource_type: str):
    for value in list((body.get("prefetch") or {}).values()) + [(body.get("context") or {}).get("draftOrders")]:
        if not isinstance(value, dict):
            continue
        entries = value.get("entry", []) if value.get("resourceType") == "Bundle" else [{"resource": value}]
        for entry in entries:
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == resource_type:
                yield resource


def _answer(client, body: dict):
    service = service_for_hook(body["hook"])
    return client.post(f"/cds-services/{service.id}", json=body)


def _quoted(client, body: dict, reference_type: str) -> tuple[str, str]:
    """(reference, quote) of the first evidence of that resource type in the fixture's answer."""
    for card in _answer(client, fresh(body)).get_json()["cards"]:
        for e in card["extension"]["spine-coding-cds"]["evidence"]:
            if e["reference"].startswith(reference_type + "/"):
                return e["reference"], e["text"]
    raise AssertionError(f"no {reference_type} evidence in the fixture")


def _inside(text: str, quote: str, payload: str) -> str:
    """The text with the payload inside the quoted sentence (before its last word: what the reader
    reads in the sentence comes before it, even when a full stop of the payload cuts it)."""
    words = quote.split()
    pattern = r"\s+".join(re.escape(w) for w in words[:-1])
    found = re.search(pattern, text)
    assert found, "quote not found in its text"
    return text[:found.end()] + " " + payload + " " + text[found.end():]


def _set_condition_code(body, payload):
    for condition in _resources(body, "Condition"):
        for coding in condition["code"]["coding"]:
            coding["code"] = "M54.19" + payload


def _set_condition_text(body, payload):
    for condition in _resources(body, "Condition"):
        condition["code"]["text"] = (condition["code"].get("text") or "") + " " + payload


def _set_condition_note(body, payload):
    for condition in _resources(body, "Condition"):
        for note in condition.get("note", []):
            note["text"] = note["text"] + " " + payload


def _set_ids(resource_type):
    def mutate(body, payload):
        for resource in _resources(body, resource_type):
            old, new = resource["id"], resource["id"] + payload
            resource["id"] = new
            text = json.dumps(body).replace(f'"{resource_type}/{old}"', json.dumps(f"{resource_type}/{new}"))
            body.clear()
            body.update(json.loads(text))
    return mutate


def _in_quote(resource_type, client):
    def mutate(body, payload):
        reference, quote = _quoted(client, body, resource_type)
        for resource in _resources(body, resource_type):
            if f"{resource_type}/{resource['id']}" != reference:
                continue
            if resource_type == "DiagnosticReport" and quote.split()[0] in resource.get("conclusion", ""):
                resource["conclusion"] = _inside(resource["conclusion"], quote, payload)
                return
            for holder in ([c.get("attachment") for c in resource.get("content", [])]
                           + resource.get("presentedForm", [])):
                text = base64.b64decode(holder["data"]).decode()
                if re.search(r"\s+".join(re.escape(w) for w in quote.split()[:2]), text):
                    # chart text "<img ...>" in an HTML note is written &lt;img ...&gt;
                    shown = html.escape(payload) if "html" in holder.get("contentType", "") else payload
                    holder["data"] = base64.b64encode(_inside(text, quote, shown).encode()).decode()
                    return
        raise AssertionError("the quoted text was not found")
    return mutate


# (field, fixture, mutation); each mutation puts the payload into that field only
def _cases(client):
    return [
        ("Condition.code", "vignettes/tab-header-fires-m54.19-does-not-exist.json", _set_condition_code),
        ("Condition.code.text", "vignettes/spl-excludes-fires-q76.2-and-m43.11-same-congenital-c1-c2.json",
         _set_condition_text),
        ("Condition.note", "vignettes/spl-specificity-fires-from-the-diagnosis-text.json", _set_condition_note),
        ("Condition.id", "vignettes/rad-excludes-fires-g54.2-conflict.json", _set_ids("Condition")),
        ("DiagnosticReport.conclusion", "vignettes/ord-diagnosis-fires-mri-for-m43.10.json",
         _in_quote("DiagnosticReport", client)),
        ("DiagnosticReport.id", "encounter-discharge_c1-c2-slip_coded-m43.10.json", _set_ids("DiagnosticReport")),
        ("DocumentReference.content", "encounter-discharge_c1-c2-slip_coded-m43.10.json",
         _in_quote("DocumentReference", client)),
        ("DocumentReference.id", "encounter-discharge_c1-c2-slip_coded-m43.10.json", _set_ids("DocumentReference")),
        ("ServiceRequest.id", "vignettes/ord-anatomy-fires-acdf-for-m54.11.json", _set_ids("ServiceRequest")),
    ]


TEXT_FIELDS = {"Condition.note", "DiagnosticReport.conclusion", "DocumentReference.content"}
CASE_NAMES = ["Condition.code", "Condition.code.text", "Condition.note", "Condition.id",
              "DiagnosticReport.conclusion", "DiagnosticReport.id", "DocumentReference.content",
              "DocumentReference.id", "ServiceRequest.id"]


def injected_request(client, field: str, payload_name: str) -> dict:
    """A hook request (fixture of the field) carrying the payload in that chart field."""
    _, fixture, mutate = next(c for c in _cases(client) if c[0] == field)
    body = _load(fixture)
    mutate(body, PAYLOADS[payload_name])
    return body


# ------------------------------------------------------------------ the shared functions
@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_escaped_markdown_renders_as_exactly_the_text(name):
    for text in (PAYLOADS[name], "see " + PAYLOADS[name], PAYLOADS[name].strip() + " www.evil.example https://e.x/"):
        escaped = escaping.markdown(text)
        assert "\n" not in escaped
        shown = assert_text_only(f"> \"{escaped}\" (x)\n\n- {escaped}\n\n{escaped}\n", name)
        assert " ".join(text.split()) in shown


def test_markdown_escaping_is_once_only_and_leaves_plain_words_alone():
    once = escaping.markdown("[x](y)")
    assert escaping.markdown(once) == once
    assert escaping.markdown("Spondylolisthesis, occipito-atlanto-axial region M43.11") == \
        "Spondylolisthesis, occipito-atlanto-axial region M43.11"
    assert escaping.markdown("1. one") == "1\\. one" and escaping.markdown("- x") == "\\- x"


def test_shortened_markdown_never_ends_in_a_lone_backslash():
    text = escaping.markdown("x" * 137 + "[[[[")
    for limit in range(130, 150):
        short = escaping.shorten_markdown(text, limit)
        assert len(short) < limit or short == text
        body = short[:-1] if short.endswith("…") else short
        assert (len(body) - len(body.rstrip("\\"))) % 2 == 0


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "=HYPERLINK(\"http://e\")"])
def test_csv_cells_never_start_a_formula(cell):
    assert escaping.csv_cell(cell) == "'" + cell
    assert escaping.csv_cell("M43.11") == "M43.11" and escaping.csv_cell(3) == 3


def test_log_values_stay_on_one_line():
    value = "Condition/c1\n2026-01-01 ERROR forged\r\x1b[31m\u2028\x85\\n"
    out = escaping.log_value(value)
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", out)
    assert out == "Condition/c1\\n2026-01-01 ERROR forged\\r\\x1b[31m\\u2028\\x85\\\\n"


# ------------------------------------------------------------------ cards, every field that reaches one
@pytest.mark.parametrize("payload_name", sorted(PAYLOADS))
@pytest.mark.parametrize("field", CASE_NAMES)
def test_chart_payloads_reach_cards_as_text_only(client, field, payload_name):
    body = injected_request(client, field, payload_name)
    response = _answer(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    cards = response.get_json()["cards"]
    ids = field.endswith(".id")
    # FHIR ids are validated: an id carrying markup makes its resource invalid (skipped and said so);
    # ids that pass (a backtick, a table bar) reach the evidence references, escaped.
    skipped = (response.get_json().get("extension") or {}).get("spine-coding-cds", {}).get("skipped", [])
    # In a text (a note, a conclusion) a line break ends the sentence: the lines of a multi-line payload
    # are sentences of their own, quoted or not as the reader decides; they must still be text only.
    read_as_text = field in TEXT_FIELDS and "\n" in PAYLOADS[payload_name]
    # ... and a full stop in a text ends its sentence ("x.png"): what reaches the card is up to it.
    visible = VISIBLE[payload_name].split(".")[0] if field in TEXT_FIELDS else None
    check_cards(cards, payload_name, f"{field} / {payload_name}", must_reach=not (ids and skipped) and not read_as_text,
                visible=visible)
    if ids and skipped:
        assert any(field.split(".")[0] in s["reference"] or "draftOrders" in s["reference"] for s in skipped)


@pytest.mark.parametrize("payload_name", sorted(PAYLOADS))
def test_every_string_field_of_the_chart_at_once(client, payload_name):
    """Displays, texts, descriptions, dates, order codes and reasons, notes: the payload appended to
    every string of every clinical resource. Whatever reaches a card is text."""
    skip = {"resourceType", "system", "status", "reference", "contentType", "data", "id", "intent", "url"}
    for fixture in ("encounter-discharge_c1-c2-slip_coded-m43.10.json", "order-sign_c1-c2-slip_coded-m43.10.json",
                    "vignettes/ord-anatomy-fires-acdf-for-m54.11.json"):
        body = _load(fixture)

        def visit(value, key=None):
            if isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, str) and k not in skip and not (k == "code" and "coding" not in str(key)):
                        value[k] = v + PAYLOADS[payload_name]
                    else:
                        visit(v, k)
            elif isinstance(value, list):
                for v in value:
                    visit(v, key)

        visit(body["prefetch"])
        visit(body["context"].get("draftOrders"))
        response = _answer(client, body)
        assert response.status_code == 200, (fixture, response.get_data(as_text=True)[:300])
        check_cards(response.get_json()["cards"], payload_name, fixture, must_reach=False)


@pytest.mark.parametrize("date", ["[x](javascript:alert(1))", "2026-11-20<img src=x onerror=alert(1)>",
                                  "2026-11-20\n# heading", "![](http://e/x)"])
def test_dates_from_the_chart_never_carry_markup(client, date):
    for resource_type in ("DocumentReference", "DiagnosticReport"):
        body = _load("encounter-discharge_c1-c2-slip_coded-m43.10.json")
        for resource in _resources(body, resource_type):
            resource["date" if resource_type == "DocumentReference" else "effectiveDateTime"] = date
            resource["issued"] = date if resource_type == "DiagnosticReport" else resource.get("issued", date)
        response = _answer(client, body)
        assert response.status_code == 200
        for card in response.get_json()["cards"]:
            for field, text in card_texts(card):
                assert_text_only(text, f"{resource_type}.date {date!r} {field}")


# ------------------------------------------------------------------ malformed codes
@pytest.mark.parametrize("code", ["M43.1[X](javascript:alert(1))", "M43.1\n# x", "M43.11|", "M54.1`x`",
                                  "M43.1X(", "<img src=x onerror=alert(1)>", "M43." + "1" * 300])
@pytest.mark.parametrize("fixture", ["encounter-discharge_c1-c2-slip_coded-m43.10.json",
                                     "order-sign_c1-c2-slip_coded-m43.10.json",
                                     "vignettes/ord-anatomy-fires-acdf-for-m54.11.json"])
def test_a_malformed_code_is_a_tab_header_invalid_card_never_a_500(client, code, fixture):
    body = _load(fixture)
    for condition in _resources(body, "Condition"):
        for coding in condition["code"]["coding"]:
            coding["code"] = code
    response = _answer(client, body)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    cards = response.get_json()["cards"]
    rules = {c["extension"]["spine-coding-cds"]["rule"] for c in cards}
    skipped = (response.get_json().get("extension") or {}).get("spine-coding-cds", {}).get("skipped")
    if body["hook"] != "order-sign":
        assert "TAB-HEADER" in rules or skipped, rules
    for card in cards:
        for field, text in card_texts(card):
            assert_text_only(text, f"{code!r} {field}")
        assert len(card["summary"]) < 140


# ------------------------------------------------------------------ pages
def _assert_page_has_no_payload_markup(page: str, where: str) -> None:
    out = parsed(page)
    for tag, attrs in out.tags:
        assert tag not in ("img", "script", "iframe", "object", "embed", "svg"), f"{where}: <{tag}> on the page"
        assert not any(k.startswith("on") for k in attrs), f"{where}: event handler attribute {attrs}"
        assert not str(attrs.get("href", "")).lower().startswith("javascript:"), f"{where}: javascript: link"
        assert "evil" not in str(attrs.get("src", "")) + str(attrs.get("href", "")), f"{where}: remote resource"


@pytest.mark.parametrize("payload_name", ["link", "image", "html", "script", "heading"])
@pytest.mark.parametrize("field", ["Condition.code", "DocumentReference.content", "DiagnosticReport.conclusion"])
def test_the_playground_shows_chart_payloads_as_text(client, field, payload_name):
    body = injected_request(client, field, payload_name)
    service = service_for_hook(body["hook"])
    response = client.post("/playground/run", data={"service": service.id, "request": json.dumps(body)})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'class="card' in page, "no card on the playground page"
    _assert_page_has_no_payload_markup(page, f"playground {field} {payload_name}")
    cards = page[page.index('id="result"'):]
    shown = " ".join("".join(parsed(cards).text).split()).casefold()
    assert VISIBLE[payload_name].split(".")[0].casefold() in shown, shown


@pytest.mark.parametrize("payload_name", ["link", "image", "html", "script", "heading"])
def test_rule_pages_show_chart_payloads_as_text(client, app, monkeypatch, payload_name):
    from service.api import rule_pages

    body = injected_request(client, "DocumentReference.content", payload_name)
    cards = _answer(client, body).get_json()["cards"]
    rule = cards[0]["extension"]["spine-coding-cds"]["rule"]
    run = rule_pages._Run(cards, {}, {})
    views = [rule_pages._card_view(c, run, "spine-coding-cds") for c in cards
             if c["extension"]["spine-coding-cds"]["rule"] == rule]
    monkeypatch.setattr(rule_pages, "worked_examples",
                        lambda rt, rule_id: [{"id": "hostile", "about": PAYLOADS[payload_name], "fires": True,
                                              "cards": views}])
    page = client.get(f"/rules/{rule}").get_data(as_text=True)
    _assert_page_has_no_payload_markup(page, f"rule page {payload_name}")
    shown = " ".join("".join(parsed(page).text).split()).casefold()
    assert VISIBLE[payload_name].split(".")[0].casefold() in shown, shown


# ------------------------------------------------------------------ CSV
def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_audit_csv_cells_never_start_a_formula(tmp_path):
    from service import audit

    body = _load("encounter-discharge_c1-c2-slip_coded-m43.10.json")
    # valid FHIR ids may start with "-"; the code and the summary carry the other formula characters
    patient, encounter = "-2-3-cmd", "-1-enc"
    text = json.dumps(body).replace(f'"{body["context"]["patientId"]}"', f'"{patient}"')
    text = text.replace(f'Patient/{body["context"]["patientId"]}"', f'Patient/{patient}"')
    text = text.replace(f'"{body["context"]["encounterId"]}"', f'"{encounter}"')
    text = text.replace(f'Encounter/{body["context"]["encounterId"]}"', f'Encounter/{encounter}"')
    body = json.loads(text)
    for condition in _resources(body, "Condition"):
        condition["code"]["coding"][0]["code"] = "+M54.19=1+1"
    entries = [{"resource": r} for key, r in body["prefetch"].items() if isinstance(r, dict)
               and r.get("resourceType") != "Bundle"]
    entries += [e for r in body["prefetch"].values() if isinstance(r, dict) and r.get("resourceType") == "Bundle"
                for e in r.get("entry", [])]
    export = tmp_path / "export"
    export.mkdir()
    (export / "bundle.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    summary = audit.run(export, tmp_path / "out", workers=1, progress=None)
    assert summary["cards"] > 0
    cells = _cells((tmp_path / "out" / "audit.csv").read_text())
    assert "'" + patient in cells and "'" + encounter in cells and "'+M54.19=1+1" in cells
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    _assert_page_has_no_payload_markup((tmp_path / "out" / "audit.html").read_text(), "audit.html")


def test_analytics_csv_cells_never_start_a_formula():
    from service.analytics import Report, RuleFigures

    report = Report(filters=None)
    report.rules = [RuleFigures("=cmd|' /C calc'!A0", "@kind"), RuleFigures("-2+3", "+x")]
    cells = _cells(report.csv())
    assert "'=cmd|' /C calc'!A0" in cells and "'-2+3" in cells
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]


# ------------------------------------------------------------------ logs
@pytest.fixture
def log_lines(app):
    """What the service's own handler (logs.configure: EscapingFormatter) writes, line by line."""
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_spine_cds", False))
    stream = io.StringIO()
    old = handler.setStream(stream)
    yield lambda: stream.getvalue().splitlines()
    handler.setStream(old)


def test_a_resource_id_or_element_name_cannot_forge_a_log_line_or_reach_the_log(client, log_lines):
    body = _load("encounter-discharge_c1-c2-slip_coded-m43.10.json")
    forged = "x\n2026-01-01 00:00:00,000 ERROR service.app: FORGED\r\x1b[2K"
    reports = list(_resources(body, "DiagnosticReport"))
    reports[0]["id"] = reports[0]["id"] + forged  # invalid id: skipped, its reference logged
    notes = list(_resources(body, "DocumentReference"))
    notes[0]["zzSecretElementName"] = "x"  # an element R4 does not define
    conditions = list(_resources(body, "Condition"))
    conditions[0]["code"]["coding"][0]["zzNestedElementName"] = "x"
    response = _answer(client, body)
    assert response.status_code == 200
    skipped = response.get_json()["extension"]["spine-coding-cds"]["skipped"]
    assert any("zzSecretElementName" in s["problem"] for s in skipped)  # the EHR is told which element
    lines = log_lines()
    assert any("skipped" in line for line in lines), lines
    assert not [line for line in lines if "FORGED" in line and not line.startswith(tuple("0123456789"))]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line) or line.startswith("  ")
               for line in lines), lines
    text = "\n".join(lines)
    assert "FORGED" not in text or "\\n2026-01-01" in text
    assert "\x1b" not in text and "\r" not in text
    assert "zzSecretElementName" not in text and "zzNestedElementName" not in text
    assert "unknown element(s)" in text


def test_every_argument_logged_is_escaped_and_our_tracebacks_keep_their_lines(app, log_lines):
    from service.logs import safe_exception

    log = logging.getLogger("service.test_injection")
    log.warning("refused a request to %s: %s (%d)", "/cds-services/x\n2026-01-01 ERROR forged", "\x1b[2Kr\u2028", 3)
    try:
        raise ValueError(PAYLOADS["heading"])  # its message is never logged
    except ValueError as exc:
        log.error("failed: %s", safe_exception(exc))
    lines = log_lines()
    assert lines[0].endswith("refused a request to /cds-services/x\\n2026-01-01 ERROR forged: \\x1b[2Kr\\u2028 (3)")
    assert lines[1].endswith("failed: ValueError (message withheld)")
    assert lines[2].startswith("  File ") and "# heading" not in "\n".join(lines)

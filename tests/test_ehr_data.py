"""Data as EHRs send it (issue 12): ICD-10-CM under its OID, codes without the dot, SNOMED CT beside;
notes in RTF and reports in PDF; several attachments of one document; charsets.

The fixtures are in fhir_fixtures/ehr/ (built by build_ehr.py: one chart, sent several ways, and its
text/plain twin). Times of the hostile documents go to test-artifacts/ehr-hostile-documents.json;
nothing here is a timed assertion but the fuzz's generous bound.
"""
from __future__ import annotations

import base64
import copy
import json
import logging
import sys
import time
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.clinical_text import (MAX_PDF_BYTES, MAX_PDF_PAGE_CONTENT, MAX_PDF_PAGES, MAX_RTF_BYTES, pdf_reading,
                                   read_attachment, rtf_reading)
from service.deadline import Deadline, DeadlineExceeded
from service.findings import gather_findings
from service.hook_request import parse_hook_request
from service.nlp.concepts import LexiconError
from service.record import ICD10CM_SYSTEMS, build_record, load_icd10cm_systems, normalise_codings
from service.services import service_for_hook

from .support import FIXTURES, ROOT, fresh

EHR = FIXTURES / "ehr"
sys.path.insert(0, str(EHR))
import build_ehr  # noqa: E402
import documents  # noqa: E402
import measure_readers  # noqa: E402

ICD_URL, ICD_OID, SNOMED = build_ehr.ICD_URL, build_ehr.ICD_OID, build_ehr.SNOMED
ENDPOINTS = {"encounter-sign": "/cds-services/spine-coding-encounter-sign",
             "order-sign": "/cds-services/spine-coding-order-sign"}
SCANNED = "PDF without a text layer (scanned images): not read, no OCR"


def load(name: str) -> dict:
    return fresh(json.loads((EHR / f"{name}.json").read_text()))


def answer(client, body: dict) -> dict:
    response = client.post(ENDPOINTS[body["hook"]], json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()


def signature(result: dict) -> list[tuple]:
    """What the cards say, card for card: rule, kind, current and proposed codes."""
    return sorted((c["extension"]["spine-coding-cds"]["rule"], c["source"]["topic"]["code"],
                   tuple(c["extension"]["spine-coding-cds"]["currentCodes"]),
                   tuple(c["extension"]["spine-coding-cds"]["proposedCodes"])) for c in result["cards"])


def skipped(result: dict) -> list[dict]:
    return (result.get("extension") or {}).get("spine-coding-cds", {}).get("skipped", [])


@pytest.fixture(scope="module")
def runtime():
    import tempfile

    from service import create_app

    folder = tempfile.mkdtemp(prefix="spine-ehr-")
    return create_app({"database_url": f"sqlite:///{folder}/e.sqlite3"}).extensions["spine_cds"]


def record_of(body: dict):
    return build_record(parse_hook_request(body, service_for_hook(body["hook"])), None, Deadline(10))


def findings_of(runtime, body: dict, *, element: bool = True) -> set[tuple]:
    record = record_of(body)
    facts = gather_findings(record, runtime.reader, runtime.value_sets, runtime.terminology, Deadline(10))
    return {(f.kind, f.assertion, f.region, f.level, f.specific, f.phrase, f.section, f.modifiers,
             f.evidence.reference, f.evidence.element if element else None, " ".join(f.evidence.text.split()))
            for f in facts.text if f.evidence.element != "code"}  # what the texts say (SNOMED CT codes aside)


TWIN = "url-coded_text-plain"
EXPECTED = [("RAD-SPECIFICITY", "specificity", ("M54.10",), ("M54.11",)),
            ("SPL-SPECIFICITY", "specificity", ("M43.10",), ("M43.11",))]


# ------------------------------------------------------------------ ICD-10-CM codings
def test_the_twin_gets_its_two_cards(client):
    """The control: each card rests on one document (the slip's level is in the report only, the root's
    in the note only), so a reader that drops either loses a card."""
    assert signature(answer(client, load(TWIN))) == EXPECTED


def test_the_oid_coded_record_gets_the_same_cards_as_the_url_coded_one(client):
    oid = load("oid-coded_text-plain")
    assert [c["code"]["coding"][0]["system"] for c in (e["resource"] for e in oid["prefetch"]["conditions"]["entry"])] \
        == [SNOMED, ICD_OID]  # SNOMED CT first in one Condition, ICD-10-CM first in the other
    assert signature(answer(client, oid)) == signature(answer(client, load(TWIN))) == EXPECTED


def test_the_order_sign_oid_coded_reason_gets_the_same_card(client):
    url, oid = answer(client, load("order-sign_url-coded")), answer(client, load("order-sign_oid-coded"))
    assert signature(oid) == signature(url) == [("ORD-DIAGNOSIS", "medical-necessity", ("M43.10",), ("M43.11",))]
    order = oid["cards"][0]["suggestions"][0]["actions"][0]["resource"]
    assert order["resourceType"] == "ServiceRequest"
    # the OID-coded reason is replaced, not left beside the new one
    assert [c for r in order["reasonCode"] for c in r["coding"]] == [
        {"system": ICD_URL, "code": "M43.11", "display": "Spondylolisthesis, occipito-atlanto-axial region"}]


def test_an_oid_coded_condition_updated_by_a_card_ends_with_a_proper_coding_and_loses_nothing(client):
    body = load("oid-coded_text-plain")
    sent = {e["resource"]["id"]: copy.deepcopy(e["resource"]) for e in body["prefetch"]["conditions"]["entry"]}
    result = answer(client, body)
    updates = {a["resource"]["id"]: a["resource"] for c in result["cards"] for s in c.get("suggestions", [])
               for a in s["actions"] if a["type"] == "update"}
    assert set(updates) == {"cond-slip", "cond-radic"}
    slip, radic = updates["cond-slip"], updates["cond-radic"]
    assert slip["code"]["coding"] == [
        {"system": ICD_URL, "code": "M43.11", "display": "Spondylolisthesis, occipito-atlanto-axial region"},
        {"system": SNOMED, "code": "274152003", "display": "Spondylolisthesis"}]
    assert radic["code"]["coding"] == [
        {"system": ICD_URL, "code": "M54.11", "display": "Radiculopathy, occipito-atlanto-axial region"},
        {"system": SNOMED, "code": "11049006", "display": "Radiculopathy"}]
    for cid, updated in updates.items():
        assert {k: v for k, v in updated.items() if k != "code"} == {k: v for k, v in sent[cid].items() if k != "code"}
    # and the request the EHR sent was not changed in place by the normalisation
    assert {e["resource"]["id"]: e["resource"] for e in body["prefetch"]["conditions"]["entry"]} == sent


@pytest.mark.parametrize("codings", [
    [{"system": ICD_OID, "code": "M4311"}],
    [{"system": ICD_OID, "code": "m43.11"}],
    [{"system": ICD_URL, "code": "m4311"}],
    [{"system": ICD_URL, "code": " M43.11 "}],
    [{"system": SNOMED, "code": "274152003"}, {"system": ICD_OID, "code": "M43.11"}],
    [{"system": ICD_OID, "code": "M4311"}, {"system": SNOMED, "code": "274152003"}],
    [{"system": ICD_OID, "code": "M4311"}, {"system": ICD_URL, "code": "M43.11"}],  # the same code twice: read once
], ids=["oid-no-dot", "oid-lower", "url-lower-no-dot", "padded", "snomed-first", "snomed-after", "both-systems"])
def test_icd10cm_codings_are_read_however_ehrs_write_them(runtime, codings):
    body = load(TWIN)
    body["prefetch"]["conditions"]["entry"][0]["resource"]["code"]["coding"] = codings
    facts = gather_findings(record_of(body), runtime.reader, runtime.value_sets, runtime.terminology)
    slip = next(c for c in facts.conditions if c.reference == "Condition/cond-slip")
    assert slip.codes == ("M43.11",)
    assert ("274152003",) == slip.snomed or not any(c["system"] == SNOMED for c in codings)


@pytest.mark.parametrize("system", [
    "2.16.840.1.113883.6.90",              # the bare OID: not a URI, so not a FHIR system
    "URN:OID:2.16.840.1.113883.6.90",      # another case
    "urn:oid:2.16.840.1.113883.6.90.1",    # another OID
    "http://hl7.org/fhir/sid/icd-10-cm/",  # a trailing slash
    "http://hl7.org/fhir/sid/icd-10",      # WHO ICD-10, not the US clinical modification
    "ICD-10-CM",
])
def test_systems_hl7_does_not_write_for_icd10cm_are_not_guessed_at(client, system):
    body = load(TWIN)
    for entry in body["prefetch"]["conditions"]["entry"]:
        entry["resource"]["code"]["coding"][0]["system"] = system
    assert system not in ICD10CM_SYSTEMS
    assert signature(answer(client, body)) == []  # no ICD-10-CM code: nothing for the rules to change


def test_normalising_codings_copies_only_what_changes():
    condition = {"resourceType": "Condition", "id": "c", "code": {"coding": [{"system": SNOMED, "code": "1"}]}}
    assert normalise_codings(condition) is condition
    report = {"resourceType": "DiagnosticReport", "id": "r", "code": {"coding": [{"system": ICD_OID, "code": "m4311"}]}}
    assert normalise_codings(report) is report  # only the elements the rules read as ICD-10-CM
    sent = {"resourceType": "ServiceRequest", "id": "s", "reasonCode": [
        {"coding": [{"system": ICD_OID, "code": "m4310", "display": "x", "userSelected": True}], "text": "t"},
        {"text": "neck pain"}]}
    before = copy.deepcopy(sent)
    out = normalise_codings(sent)
    assert sent == before and out is not sent
    assert out["reasonCode"] == [{"coding": [{"system": ICD_URL, "code": "M43.10", "display": "x", "userSelected": True}],
                                  "text": "t"}, {"text": "neck pain"}]
    assert out["reasonCode"][1] is sent["reasonCode"][1]


def test_the_code_systems_file_is_checked_at_load(tmp_path):
    assert load_icd10cm_systems() == {ICD_URL, ICD_OID}
    cases = {
        "unknown": '[icd10cm]\ncanonical = "http://hl7.org/fhir/sid/icd-10-cm"\naliases = []\nextra = 1\n',
        "canonical": '[icd10cm]\ncanonical = "http://hl7.org/fhir/sid/icd-10"\naliases = []\n',
        "guess": '[icd10cm]\ncanonical = "http://hl7.org/fhir/sid/icd-10-cm"\naliases = ["ICD10CM"]\n',
        "bare-oid": '[icd10cm]\ncanonical = "http://hl7.org/fhir/sid/icd-10-cm"\naliases = ["2.16.840.1.113883.6.90"]\n',
        "repeat": '[icd10cm]\ncanonical = "http://hl7.org/fhir/sid/icd-10-cm"\n'
                  'aliases = ["urn:oid:2.16.840.1.113883.6.90", "urn:oid:2.16.840.1.113883.6.90"]\n',
        "table": '[icd10]\ncanonical = "x"\naliases = []\n',
        "not-toml": "[icd10cm\n",
    }
    for name, text in cases.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        with pytest.raises(LexiconError):
            load_icd10cm_systems(path)


# ------------------------------------------------------------------ RTF and PDF
def test_the_rtf_reader_gives_the_note_as_written():
    rtf = documents.rtf(build_ehr.NOTE)
    assert b"\\fonttbl" in rtf and b"\\'e9" in rtf and b"\\u8805?" in rtf and b"\\par" in rtf  # a real RTF
    reading = rtf_reading(rtf)
    assert reading.problems == [] and reading.text == build_ehr.NOTE.strip()


def test_the_pdf_reader_gives_the_report_with_its_paragraphs_and_page_footers():
    data = documents.text_pdf(documents.paginate(build_ehr.REPORT, 30))
    assert data.startswith(b"%PDF-1.4") and b"/FlateDecode" in data and data.count(b"/Type /Page ") == 2
    reading = pdf_reading(data)
    assert reading.problems == []
    lines = [line for line in reading.text.split("\n") if not line.startswith("Page ")]
    expected = build_ehr.REPORT.strip().split("\n")
    assert [line for line in lines if line] == [line for line in expected if line]
    assert "\n\nFINDINGS:\nCraniocervical junction:" in reading.text  # blank lines kept where the page has them


def test_an_rtf_note_and_a_pdf_report_yield_the_findings_and_cards_of_their_text_plain_twins(client, runtime):
    twin, sent = load(TWIN), load("url-coded_rtf-note_pdf-report")
    found = findings_of(runtime, sent)
    assert found == findings_of(runtime, twin)
    kinds = {(f[0], f[3], f[8]) for f in found if f[1] == "affirmed"}
    assert ("displacement", "C1 on C2", "DiagnosticReport/dr-mri-ehr") in kinds  # read in the PDF
    assert any(k == "radiculopathy" and ref == "DocumentReference/doc-note-ehr" for k, _, ref in kinds)  # the RTF
    result = answer(client, sent)
    assert signature(result) == EXPECTED and skipped(result) == []


def test_as_ehrs_send_it_each_document_is_read_once_its_text_version_first(client, runtime):
    sent = load("as-ehrs-send-it")
    record = record_of(sent)
    assert record.skipped == []
    read = sorted((t.reference, t.element) for t in record.texts if "attachment" in t.element or "presented" in t.element)
    # the report: text/plain (presentedForm[1]) rather than the PDF before it; the note: HTML rather than RTF
    assert read == [("DiagnosticReport/dr-mri-ehr", "presentedForm[1]"),
                    ("DocumentReference/doc-note-ehr", "content[1].attachment")]
    assert findings_of(runtime, sent, element=False) == findings_of(runtime, load(TWIN), element=False)
    result = answer(client, sent)
    assert signature(result) == EXPECTED
    for card in result["cards"]:  # no sentence quoted twice (it would be, were both formats read)
        quotes = [e["text"] for e in card["extension"]["spine-coding-cds"]["evidence"]]
        assert len(quotes) == len(set(quotes))


def test_the_same_text_twice_in_one_resource_is_read_once(runtime):
    body = load(TWIN)
    note = body["prefetch"]["documentReferences"]["entry"][0]["resource"]
    note["content"].append(copy.deepcopy(note["content"][0]))  # the same text/plain twice
    note["description"] = "2. Right C2 radiculopathy."
    report = body["prefetch"]["diagnosticReports"]["entry"][0]["resource"]
    report["conclusion"] = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    record = record_of(body)
    assert [(t.reference, t.element) for t in record.texts
            if t.reference.startswith(("Doc", "Diag")) and t.element != "code.text"] == [
        ("DiagnosticReport/dr-mri-ehr", "conclusion"),
        ("DocumentReference/doc-note-ehr", "description"),
        ("DocumentReference/doc-note-ehr", "content[0].attachment")]


def test_a_scanned_pdf_is_reported_unread_and_never_guessed_at(client):
    result = answer(client, load("scanned-report"))
    assert skipped(result) == [{"reference": "DiagnosticReport/dr-mri-ehr#presentedForm[0]", "problem": SCANNED}]
    # the slip's level was documented only in the scanned report: no card claims it
    assert signature(result) == [EXPECTED[0]]


def test_a_scanned_pdf_beside_a_text_copy_is_not_even_tried(runtime):
    body = load(TWIN)
    report = body["prefetch"]["diagnosticReports"]["entry"][0]["resource"]
    report["presentedForm"].insert(0, {"contentType": "application/pdf", "data": build_ehr.b64(documents.scanned_pdf(1))})
    record = record_of(body)
    assert record.skipped == []
    assert [t.element for t in record.texts if t.reference == "DiagnosticReport/dr-mri-ehr"] == ["code.text",
                                                                                              "presentedForm[1]"]


def test_when_the_preferred_format_fails_the_next_is_read_and_the_failure_reported(runtime):
    body = load("url-coded_rtf-note_pdf-report")
    report = body["prefetch"]["diagnosticReports"]["entry"][0]["resource"]
    report["presentedForm"].append({"contentType": "text/plain", "data": "%%% not base64 %%%"})
    record = record_of(body)
    assert [(p.reference, p.problem) for p in record.skipped] == [
        ("DiagnosticReport/dr-mri-ehr#presentedForm[1]", "attachment data is not valid base64")]
    assert [t.element for t in record.texts if t.reference == "DiagnosticReport/dr-mri-ehr"] == ["code.text",
                                                                                              "presentedForm[0]"]
    assert findings_of(runtime, body) == findings_of(runtime, load("url-coded_rtf-note_pdf-report"))


# ------------------------------------------------------------------ charsets
NOTE_8BIT = build_ehr.NOTE.replace("≥", "at least").replace("Return in 4 weeks.", "Return in 3–4 weeks; “call us”.")


@pytest.mark.parametrize("content_type,encode", [
    ("text/plain; charset=ISO-8859-1", lambda t: t.replace("–", "-").replace("“", '"').replace("”", '"')
     .encode("latin-1")),
    ("text/plain; charset=windows-1252", lambda t: t.encode("cp1252")),
    ("text/plain; charset=\"Windows-1252\"", lambda t: t.encode("cp1252")),
    ("text/plain; charset=utf-16", lambda t: t.encode("utf-16")),            # with its BOM
    ("text/plain", lambda t: t.encode("utf-16")),                            # the BOM says it
    ("text/plain; charset=utf-8", lambda t: b"\xef\xbb\xbf" + t.encode("utf-8")),
    ("text/html; charset=windows-1252", lambda t: ("<p>" + t.replace("\n", "<br>") + "</p>").encode("cp1252")),
    ("text/rtf", lambda t: documents.rtf(t)),
], ids=["iso-8859-1", "windows-1252", "quoted-label", "utf-16-bom", "bom-only", "utf-8-bom", "html-1252", "rtf"])
def test_charsets_from_the_content_type_are_honoured(runtime, content_type, encode):
    body, twin = load(TWIN), load(TWIN)
    for b, text in ((body, encode(NOTE_8BIT)), (twin, NOTE_8BIT.encode("utf-8"))):
        note = b["prefetch"]["documentReferences"]["entry"][0]["resource"]
        note["content"] = [{"attachment": {"contentType": content_type if b is body else "text/plain",
                                           "data": build_ehr.b64(text)}}]
    record = record_of(body)
    text = next(t.text for t in record.texts if t.reference == "DocumentReference/doc-note-ehr")
    assert "husband, René." in text and "\ufffd" not in text and "\ufeff" not in text
    if "iso-8859-1" not in content_type.lower():
        assert "3–4 weeks; “call us”" in text
    assert findings_of(runtime, body, element=False) == findings_of(runtime, twin, element=False)


# ------------------------------------------------------------------ malformed and hostile
def _pdf_page(content: bytes) -> bytes:
    return measure_readers._one_page(zlib.compress(content))


MALFORMED = {
    "pdf-truncated": ("application/pdf", documents.text_pdf([["No fracture."]])[:300], "PDF could not be read (malformed)"),
    "pdf-garbage": ("application/pdf", b"%PDF-1.7\n" + bytes(range(256)) * 200, "PDF could not be read (malformed)"),
    "pdf-not-a-pdf": ("application/pdf", b"GIF89a not a pdf", "PDF could not be read (malformed)"),
    "pdf-empty": ("application/pdf", b"", "PDF could not be read (malformed)"),
    "pdf-page-tree-cycle": ("application/pdf", measure_readers.hostile_cases()["pdf_page_tree_cycle"][1],
                            "PDF could not be read (malformed)"),
    "pdf-nested-arrays": ("application/pdf", _pdf_page(b"BT " + b"[" * 70_000 + b"]" * 70_000 + b" TJ ET"),
                          f"PDF pages with over {MAX_PDF_PAGE_CONTENT} bytes of content not read: 1"),
    "pdf-flate-bomb": ("application/pdf", measure_readers._one_page(measure_readers._bomb(64 << 20)),
                       f"PDF pages with over {MAX_PDF_PAGE_CONTENT} bytes of content not read: 1"),
    "rtf-unclosed-font-table": ("text/rtf", b"{\\rtf1{\\fonttbl{\\f0 " + b"\\f1 a" * 10_000,
                                "RTF font table unclosed or over 16384 characters: not read"),
    "rtf-not-rtf": ("text/rtf", b"\x00\x01\x02 {{{ \\\\\\", "RTF without its {\\rtf header: not read"),
    "rtf-empty": ("application/rtf", b"", "RTF without its {\\rtf header: not read"),
    "rtf-only-a-font-table": ("text/rtf", b"{\\rtf1{\\fonttbl{\\f0 Arial;}}}", "RTF without text: nothing read"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_rtf_or_pdf_is_reported_never_a_500(client, name):
    content_type, data, problem = MALFORMED[name]
    body = load(TWIN)
    report = body["prefetch"]["diagnosticReports"]["entry"][0]["resource"]
    report["presentedForm"] = [{"contentType": content_type, "data": build_ehr.b64(data)}]
    result = answer(client, body)
    assert skipped(result) == [{"reference": "DiagnosticReport/dr-mri-ehr#presentedForm[0]", "problem": problem}]
    assert signature(result) == [EXPECTED[0]]  # the note is still read


def test_odd_rtf_escapes_are_read_not_raised_on():
    reading = rtf_reading(b"{\\rtf1\\ansi \\u99999999? \\'zz \\u-99999? caf\\'e9 \\u8805? 6}")
    assert reading.problems == [] and "caf\u00e9" in reading.text and "\u2265 6" in reading.text


def test_the_caps_are_reported_when_reached():
    big = b"%PDF-1.4\n" + b"0" * MAX_PDF_BYTES
    assert pdf_reading(big).problems == [f"PDF attachment over {MAX_PDF_BYTES} bytes: not read"]
    assert rtf_reading(b"{\\rtf1 " + b"x" * MAX_RTF_BYTES).problems == [
        f"RTF attachment over {MAX_RTF_BYTES} bytes: not read"]
    many = pdf_reading(documents.text_pdf([[f"Page {i} says C{i % 7 + 1}."] for i in range(MAX_PDF_PAGES + 5)],
                                          footer=False))
    assert many.problems == [f"PDF over {MAX_PDF_PAGES} pages: only its first {MAX_PDF_PAGES} read"]
    assert f"Page {MAX_PDF_PAGES - 1} says" in many.text and f"Page {MAX_PDF_PAGES} says" not in many.text
    long_rtf = rtf_reading(documents.rtf("No fracture at C1-C2.\n" * 20_000))
    assert long_rtf.problems == ["RTF over 262144 characters (pictures aside): only its beginning read"]
    assert long_rtf.text.startswith("No fracture at C1-C2.")


def test_an_rtf_picture_costs_nothing_and_hides_no_text():
    rtf = (b"{\\rtf1\\ansi Before the picture.\\par{\\*\\shppict{\\pict\\pngblip " + b"89504e47" * 200_000 +
           b"}}After the picture.\\par}")
    reading = rtf_reading(rtf)
    assert reading.problems == [] and reading.text == "Before the picture.\nAfter the picture."


def test_the_deadline_is_checked_between_pages():
    ticks = iter(range(10_000))
    deadline = Deadline(10, clock=lambda: next(ticks))  # every look at the clock is one second
    data = documents.text_pdf([[f"Line {n} of page {i}." for n in range(40)] for i in range(MAX_PDF_PAGES)])
    with pytest.raises(DeadlineExceeded):
        pdf_reading(data, deadline)
    assert pdf_reading(data, Deadline(60)).text.count("of page") == 40 * MAX_PDF_PAGES


def test_a_pdf_whose_deadline_passes_answers_no_cards_not_an_error(client, make_app):
    app = make_app(hook_deadline=0.05)
    body = load(TWIN)
    pages = documents.text_pdf([[f"C1 on C2 slip, page {i}, line {n}." for n in range(50)] for i in range(MAX_PDF_PAGES)])
    report = body["prefetch"]["diagnosticReports"]["entry"][0]["resource"]
    report["presentedForm"] = [{"contentType": "application/pdf", "data": build_ehr.b64(pages)}] * 3
    response = app.test_client().post(ENDPOINTS["encounter-sign"], json=body)
    assert response.status_code == 200 and response.get_json()["cards"] == []


def test_no_document_content_reaches_the_log(caplog):
    canary = b"CANARY-CLINICAL-PHRASE"
    shapes = [("application/pdf", b"%PDF-1.4\n1 0 obj << /Title (" + canary + b") >> garbage " + canary),
              ("application/pdf", documents.text_pdf([[canary.decode()]])[:-40] + canary),
              ("text/rtf", b"{\\rtf1{\\fonttbl{\\f0 " + canary),
              ("text/rtf", b"{\\rtf1 " + canary + b"\\u99999999999}")]
    with caplog.at_level(logging.DEBUG):
        for content_type, data in shapes:
            read_attachment(content_type, data)
    assert not [r for r in caplog.records if "CANARY" in r.getMessage()]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4000), st.sampled_from(["application/pdf", "text/rtf", "application/rtf"]), st.booleans())
def test_any_bytes_as_pdf_or_rtf_are_read_without_an_exception(data, content_type, headed):
    if headed:  # past the first check: the bytes reach the parser
        data = (b"%PDF-1.4\n" if content_type == "application/pdf" else b"{\\rtf1\\ansi ") + data
    started = time.perf_counter()
    reading = read_attachment(content_type, data)
    assert reading.text is None or isinstance(reading.text, str)
    assert all(isinstance(p, str) for p in reading.problems)
    assert time.perf_counter() - started < 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([b"BT", b"ET", b"Tj", b"TJ", b"Td", b"T*", b"(", b")", b"[", b"]", b"<<", b">>",
                                 b"/F1", b"10", b"-3.5", b"(C1 on C2)", b"\\", b"q", b"Q", b"cm", b"Do", b"<4142>"]),
                max_size=300))
def test_any_content_stream_is_read_without_an_exception(tokens):
    reading = pdf_reading(_pdf_page(b" ".join(tokens)))
    assert reading.text is None or isinstance(reading.text, str)


def test_hostile_documents_return_and_their_times_are_recorded(client):
    """Each hostile shape of measure_readers as the report of a hook call: the call answers 200 (cards
    or, past the deadline, none); the times go to a test artifact, not into an assertion."""
    times = {}
    for name, (content_type, data) in measure_readers.hostile_cases().items():
        body = load(TWIN)
        report = body["prefetch"]["diagnosticReports"]["entry"][0]["resource"]
        report["presentedForm"] = [{"contentType": content_type, "data": build_ehr.b64(data)}]
        started = time.perf_counter()
        response = client.post(ENDPOINTS["encounter-sign"], json=body)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, name
        result = response.get_json()
        times[name] = {"bytes": len(data), "hook_call_ms": round(elapsed, 1), "cards": len(result["cards"]),
                       "skipped": [s["problem"] for s in skipped(result)]}
    out = ROOT / "test-artifacts" / "ehr-hostile-documents.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(times, indent=1) + "\n")


def test_the_committed_fixtures_are_what_the_builder_builds():
    assert build_ehr.main(["--check"]) == 0

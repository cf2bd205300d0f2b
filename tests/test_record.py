"""The patient record: prefetch semantics, invalid entries, and the text of reports and notes."""
from __future__ import annotations

import base64

from service.clinical_text import decode_base64, decode_text, html_to_text
from service.deadline import Deadline
from service.hook_request import parse_hook_request
from service.record import build_record
from service.services import ENCOUNTER_SIGN, ORDER_SIGN

from .support import fresh, load_fixture, searchset

PATIENT = "pt-1001"


def _record(body, service=ORDER_SIGN, reader=None):
    return build_record(parse_hook_request(body, service), reader, Deadline(5))


def _condition(cid="c1", code="M43.10", patient=PATIENT, **extra):
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}, **extra}


def test_vignette_record_reads_every_resource_and_its_text(order_sign_request):
    record = _record(order_sign_request)
    assert [c.id for c in record.conditions] == ["cond-spl"]
    assert [r.id for r in record.diagnostic_reports] == ["dr-mri-1"]
    assert [d.id for d in record.document_references] == ["doc-note-1"]
    assert [p.id for p in record.procedures] == ["proc-pt-1"]
    assert [o.id for o in record.draft_orders] == ["sr-mri-flex"]
    assert record.encounter.id == "enc-2001" and record.patient.id == PATIENT
    texts = {(t.reference, t.element): t.text for t in record.texts}
    assert "Grade I anterolisthesis of C1 on C2" in texts[("DiagnosticReport/dr-mri-1", "presentedForm[0]")]
    assert texts[("DiagnosticReport/dr-mri-1", "conclusion")].startswith("Degenerative anterolisthesis")
    note = texts[("DocumentReference/doc-note-1", "content[0].attachment")]
    assert "degenerative C1-C2 spondylolisthesis without myelopathy" in note
    assert "<p>" not in note
    assert record.skipped == [] and record.unavailable == {}


def test_null_prefetch_means_no_data_and_no_412(order_sign_request):
    order_sign_request["prefetch"] = {"conditions": None, "diagnosticReports": None, "procedures": None,
                                      "documentReferences": None, "patient": None, "encounter": None}
    record = _record(order_sign_request)
    assert record.conditions == [] and record.unavailable == {}


def test_absent_optional_key_without_fhir_server_is_marked_unavailable(order_sign_request):
    del order_sign_request["prefetch"]["diagnosticReports"]
    record = _record(order_sign_request)
    assert "diagnosticReports" in record.unavailable
    assert not record.has("diagnosticReports") and record.has("conditions")


def test_absent_required_key_without_fhir_server_is_412(client, order_sign_request):
    del order_sign_request["prefetch"]["conditions"]
    response = client.post("/cds-services/spine-coding-order-sign", json=order_sign_request)
    assert response.status_code == 412
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["prefetch.conditions"]
    assert "could not be obtained" in issue["diagnostics"]


def test_operation_outcome_in_place_of_required_data_without_server_is_412(client, order_sign_request):
    order_sign_request["prefetch"]["conditions"] = {"resourceType": "OperationOutcome",
                                                    "issue": [{"severity": "error", "code": "timeout"}]}
    response = client.post("/cds-services/spine-coding-order-sign", json=order_sign_request)
    assert response.status_code == 412


def test_encounter_is_required_at_encounter_sign(client):
    body = fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json"))
    del body["prefetch"]["encounter"]
    response = client.post("/cds-services/spine-coding-encounter-sign", json=body)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.encounter"]


def test_encounter_token_without_encounter_id_at_order_sign_is_not_needed(order_sign_request):
    del order_sign_request["context"]["encounterId"]
    del order_sign_request["prefetch"]["encounter"]
    record = _record(order_sign_request)
    assert "encounter" not in record.unavailable and record.encounter is None


def test_invalid_entry_is_skipped_and_reported_the_rest_evaluated(client, order_sign_request):
    bad = _condition("bad-1", onsetDateTime="2026-13-45T99:00")
    bad["code"]["text"] = "SECRET-CLINICAL-PHRASE"
    order_sign_request["prefetch"]["conditions"]["entry"].append({"resource": bad})
    record = _record(order_sign_request)
    assert [c.id for c in record.conditions] == ["cond-spl"]
    assert len(record.skipped) == 1
    problem = record.skipped[0]
    assert problem.reference == "Condition/bad-1" and "onsetDateTime" in problem.problem
    assert "SECRET" not in problem.problem
    response = client.post("/cds-services/spine-coding-order-sign", json=order_sign_request)
    assert response.status_code == 200
    skipped = response.get_json()["extension"]["spine-coding-cds"]["skipped"]
    assert skipped == [{"reference": "Condition/bad-1", "problem": problem.problem}]


def test_r5_only_field_in_an_r4_resource_is_reported():
    body = fresh(load_fixture("order-sign_c1-c2-slip_coded-m43.10.json"))
    body["prefetch"]["procedures"]["entry"][0]["resource"]["occurrenceDateTime"] = "2026-01-01"
    record = _record(body)
    assert record.procedures == []
    assert record.skipped[0].reference == "Procedure/proc-pt-1"


def test_resources_of_another_patient_are_refused(order_sign_request):
    order_sign_request["prefetch"]["conditions"]["entry"].append({"resource": _condition("other", patient="p-9")})
    record = _record(order_sign_request)
    assert [c.id for c in record.conditions] == ["cond-spl"]
    assert record.skipped[0].problem == "belongs to another patient"


def test_included_resources_and_search_outcomes_are_ignored(order_sign_request):
    order_sign_request["prefetch"]["conditions"]["entry"] += [
        {"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}},
        {"resource": {"resourceType": "Patient", "id": PATIENT}, "search": {"mode": "include"}},
    ]
    record = _record(order_sign_request)
    assert [c.id for c in record.conditions] == ["cond-spl"] and record.skipped == []


def test_paginated_prefetch_without_server_keeps_first_page_and_says_so(order_sign_request):
    order_sign_request["prefetch"]["diagnosticReports"]["link"] = [
        {"relation": "next", "url": "https://ehr.example.org/fhir/DiagnosticReport?page=2"}]
    record = _record(order_sign_request)
    assert len(record.diagnostic_reports) == 1
    assert record.unavailable["diagnosticReports"] == "only the first page was available"


def test_encounter_sign_reads_encounter_diagnoses():
    body = fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json"))
    record = _record(body, ENCOUNTER_SIGN)
    assert record.encounter.diagnosis[0].condition.reference == "Condition/cond-spl"
    assert record.draft_orders == []


# ------------------------------------------------------------------ text
def _report_with(attachment):
    return {"resourceType": "DiagnosticReport", "id": "r1", "status": "final",
            "code": {"text": "CT"}, "subject": {"reference": f"Patient/{PATIENT}"},
            "presentedForm": [attachment]}


def test_invalid_base64_is_reported_not_read_as_empty(order_sign_request):
    """fhir.resources decodes "====" to empty bytes; we report it instead of reading nothing."""
    order_sign_request["prefetch"]["diagnosticReports"] = searchset(
        _report_with({"contentType": "text/plain", "data": "===="}))
    record = _record(order_sign_request)
    assert [r.id for r in record.diagnostic_reports] == ["r1"]
    assert ("DiagnosticReport/r1#presentedForm[0]", "attachment data is not valid base64") in \
        {(p.reference, p.problem) for p in record.skipped}


def test_garbage_base64_keeps_the_report_and_reports_the_attachment(order_sign_request):
    """The attachment's bytes are checked by our strict decoder, not the model: the report's other
    elements (its conclusion) are still read."""
    report = _report_with({"contentType": "text/plain", "data": "%%%not base64%%%"})
    report["conclusion"] = "Anterolisthesis of C1 on C2."
    order_sign_request["prefetch"]["diagnosticReports"] = searchset(report)
    record = _record(order_sign_request)
    assert [r.id for r in record.diagnostic_reports] == ["r1"]
    assert [(p.reference, p.problem) for p in record.skipped] == [
        ("DiagnosticReport/r1#presentedForm[0]", "attachment data is not valid base64")]
    assert ("DiagnosticReport/r1", "conclusion") in {(t.reference, t.element) for t in record.texts}


def test_a_malformed_pdf_attachment_is_reported_as_unread(order_sign_request):
    pdf = base64.b64encode(b"%PDF-1.4 ...").decode()
    order_sign_request["prefetch"]["diagnosticReports"] = searchset(
        _report_with({"contentType": "application/pdf", "data": pdf}))
    record = _record(order_sign_request)
    assert [(p.reference, p.problem) for p in record.skipped] == [
        ("DiagnosticReport/r1#presentedForm[0]", "PDF could not be read (malformed)")]
    assert not [t for t in record.texts if t.element.startswith("presentedForm")]


def test_an_image_attachment_is_still_reported_as_a_type_not_read(order_sign_request):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    order_sign_request["prefetch"]["diagnosticReports"] = searchset(
        _report_with({"contentType": "image/png", "data": png}))
    record = _record(order_sign_request)
    assert [p.problem for p in record.skipped] == ["attachment type image/png not read"]
    assert record.skipped[0].logged == "attachment type not read"


def test_attachment_url_without_fhir_access_is_reported(order_sign_request):
    order_sign_request["prefetch"]["diagnosticReports"] = searchset(
        _report_with({"contentType": "text/plain", "url": "Binary/b1"}))
    record = _record(order_sign_request)
    assert any("no FHIR server access" in p.problem for p in record.skipped)


def test_html_markup_scripts_and_entities_are_stripped():
    text = html_to_text("<html><head><title>t</title><style>p{}</style></head><body>"
                        "<p>Anterolisthesis&nbsp;of C1 &amp; C2</p><script>alert(1)</script>"
                        "<div>No fracture.</div></body></html>")
    assert text == "Anterolisthesis\xa0of C1 & C2\nNo fracture."


def test_charset_and_line_wrapped_base64():
    raw = "Névralgie occipitale, C1–C2".encode("latin-1", errors="replace")
    wrapped = base64.b64encode(raw).decode()
    wrapped = wrapped[:8] + "\n" + wrapped[8:]
    data = decode_base64(wrapped)
    assert decode_text("text/plain; charset=ISO-8859-1", data).startswith("Névralgie occipitale")
    assert decode_text("image/png", data) is None
    assert decode_text("text/plain; charset=no-such-charset", b"abc") == "abc"


def test_unknown_elements_make_a_resource_invalid_but_unread_ones_are_not_validated(order_sign_request):
    conditions = order_sign_request["prefetch"]["conditions"]["entry"]
    conditions.append({"resource": _condition("c-unknown", colour="red")})
    conditions.append({"resource": _condition("c-meta", meta={"lastUpdated": "not a date"})})
    record = _record(order_sign_request)
    assert ("Condition/c-unknown", "invalid FHIR R4: unknown element colour") in \
        {(p.reference, p.problem) for p in record.skipped}
    assert "c-meta" in [c.id for c in record.conditions]  # meta is read by no rule

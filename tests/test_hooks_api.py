"""Discovery and service calls, as an EHR or the CDS Hooks sandbox makes them."""
from __future__ import annotations

import json

import pytest

from service.services import SERVICES, TOKEN_PATTERN

from .support import fresh, load_example, load_fixture, outcome_issues

ORDER_SIGN = "/cds-services/spine-coding-order-sign"
ENCOUNTER_SIGN = "/cds-services/spine-coding-encounter-sign"
ENCOUNTER_DISCHARGE = "/cds-services/spine-coding-encounter-discharge"


# ------------------------------------------------------------------- discovery
def test_discovery_lists_the_four_services_from_their_declarations(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert {(s["id"], s["hook"]) for s in services} == {
        ("spine-coding-order-sign", "order-sign"),
        ("spine-coding-order-select", "order-select"),
        ("spine-coding-encounter-sign", "encounter-sign"),
        ("spine-coding-encounter-discharge", "encounter-discharge"),
    }
    for entry in services:
        declared = SERVICES[entry["id"]]
        assert entry == declared.discovery_entry()
        for key in ("title", "description", "usageRequirements"):
            assert isinstance(entry[key], str) and entry[key]
        assert set(entry["prefetch"]) >= {"patient", "conditions", "procedures", "diagnosticReports",
                                          "documentReferences", "encounter"}


def test_prefetch_templates_use_only_context_tokens_of_their_hook(client):
    """Only root-level primitive context fields may be tokens (CDS Hooks 2.0 §Prefetch tokens)."""
    for entry in client.get("/cds-services").get_json()["services"]:
        allowed = {"userId", "patientId", "encounterId"}
        for template in entry["prefetch"].values():
            assert "{{" not in TOKEN_PATTERN.sub("", template), template
            assert set(TOKEN_PATTERN.findall(template)) <= allowed, template
            assert "draftOrders" not in template


def test_discovery_omits_nothing_empty(client):
    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                assert v not in (None, "", [], {})
                walk(v)
    walk(client.get("/cds-services").get_json())


# ------------------------------------------------------------- valid requests
def test_order_sign_vignette_answers_cards_array(client, order_sign_request):
    response = client.post(ORDER_SIGN, json=order_sign_request)
    assert response.status_code == 200
    body = response.get_json()
    assert isinstance(body["cards"], list)
    assert "extension" not in body  # the record was complete and valid: nothing degraded


@pytest.mark.parametrize("path,fixture", [
    (ENCOUNTER_SIGN, "encounter-sign_c1-c2-slip_coded-m43.10.json"),
    (ENCOUNTER_DISCHARGE, "encounter-discharge_c1-c2-slip_coded-m43.10.json"),
])
def test_encounter_hooks_answer(client, path, fixture):
    response = client.post(path, json=fresh(load_fixture(fixture)))
    assert response.status_code == 200
    assert isinstance(response.get_json()["cards"], list)


def test_official_r4_order_sign_context_with_other_request_types(client):
    """The hook library's R4 example: NutritionOrder and MedicationRequest, no Bundle.type."""
    context = load_example("lib1.0.1_order-sign_context_R4.json")["context"]
    body = {"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": context, "prefetch": {"conditions": None}}
    response = client.post(ORDER_SIGN, json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["cards"] == []


def test_draft_orders_without_bundle_type_and_extra_context_fields(client):
    """The docs' PAMA example: Bundle without type, `selections` in context, intent plan."""
    body = load_example("docs_examples_order-select_pama_request.json")
    body.update(hook="order-sign", prefetch={"conditions": None})
    response = client.post(ORDER_SIGN, json=body)
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("example", ["lib1.0.1_encounter-discharge_context.wrapped.json",
                                     "lib1.0.1_encounter-start_context.wrapped.json"])
def test_official_encounter_contexts(client, example):
    context = load_example(example)["context"]
    body = {"hook": "encounter-discharge", "hookInstance": "0f6e2d41-8a58-4b7e-b1d4-5d9e3c2a7b60",
            "context": context, "prefetch": {"conditions": None, "encounter": None}}
    assert client.post(ENCOUNTER_DISCHARGE, json=body).status_code == 200


def test_request_extension_objects_are_ignored(client, order_sign_request):
    order_sign_request["extension"] = load_example("spec2.0.1_request_with_extension.json")["extension"]
    order_sign_request["context"]["extension"] = {"com.example.x": {"y": 1}}
    assert client.post(ORDER_SIGN, json=order_sign_request).status_code == 200


def test_fhir_json_content_type_is_accepted(client, order_sign_request):
    response = client.post(ORDER_SIGN, data=json.dumps(order_sign_request),
                           content_type="application/fhir+json; charset=utf-8")
    assert response.status_code == 200


# ------------------------------------------------------------ invalid requests
def _expressions(response) -> set[str]:
    return {e for issue in outcome_issues(response) for e in issue.get("expression", [])}


@pytest.mark.parametrize("mutate,field", [
    (lambda b: b.pop("hook"), "hook"),
    (lambda b: b.update(hook=7), "hook"),
    (lambda b: b.update(hook="patient-view"), "hook"),
    (lambda b: b.pop("hookInstance"), "hookInstance"),
    (lambda b: b.update(hookInstance="not-a-uuid"), "hookInstance"),
    (lambda b: b.update(hookInstance=None), "hookInstance"),
    (lambda b: b.pop("context"), "context"),
    (lambda b: b.update(context=[]), "context"),
    (lambda b: b["context"].pop("patientId"), "context.patientId"),
    (lambda b: b["context"].update(patientId="../etc/passwd"), "context.patientId"),
    (lambda b: b["context"].update(patientId=12), "context.patientId"),
    (lambda b: b["context"].pop("userId"), "context.userId"),
    (lambda b: b["context"].update(userId="Patient/1"), "context.userId"),
    (lambda b: b["context"].pop("draftOrders"), "context.draftOrders"),
    (lambda b: b["context"].update(draftOrders={"resourceType": "Patient"}), "context.draftOrders"),
    (lambda b: b["context"].update(draftOrders={"resourceType": "Bundle", "entry": {}}),
     "context.draftOrders.entry"),
    (lambda b: b["context"]["draftOrders"]["entry"].append({"resource": "x"}), "context.draftOrders.entry[1]"),
    (lambda b: b.update(fhirServer="ftp://x"), "fhirServer"),
    (lambda b: b.update(fhirAuthorization={"access_token": "t", "token_type": "Bearer"}), "fhirServer"),
    (lambda b: b.update(fhirServer="https://ehr.example.org/fhir",
                        fhirAuthorization={"token_type": "Bearer"}), "fhirAuthorization.access_token"),
    (lambda b: b.update(fhirServer="https://ehr.example.org/fhir",
                        fhirAuthorization={"access_token": "t", "token_type": "MAC"}),
     "fhirAuthorization.token_type"),
    (lambda b: b.update(prefetch=[1]), "prefetch"),
    (lambda b: b.update(extension=5), "extension"),
    (lambda b: b["prefetch"].update(conditions="Condition?patient=1"), "prefetch.conditions"),
])
def test_malformed_fields_are_400_naming_the_field(client, order_sign_request, mutate, field):
    mutate(order_sign_request)
    response = client.post(ORDER_SIGN, json=order_sign_request)
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert field in _expressions(response)


def test_every_problem_is_reported_at_once(client):
    response = client.post(ORDER_SIGN, json={"hook": "order-sign", "context": {"userId": "x"}})
    assert response.status_code == 400
    assert {"hookInstance", "context.userId", "context.patientId", "context.draftOrders"} <= _expressions(response)


def test_encounter_sign_requires_encounter_id(client):
    body = fresh(load_fixture("encounter-sign_c1-c2-slip_coded-m43.10.json"))
    del body["context"]["encounterId"]
    response = client.post(ENCOUNTER_SIGN, json=body)
    assert response.status_code == 400
    assert "context.encounterId" in _expressions(response)


def test_unknown_service_is_404(client, order_sign_request):
    response = client.post("/cds-services/no-such-service", json=order_sign_request)
    assert response.status_code == 404
    assert outcome_issues(response)[0]["code"] == "not-found"


def test_wrong_content_type_is_415(client, order_sign_request):
    response = client.post(ORDER_SIGN, data=json.dumps(order_sign_request), content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in outcome_issues(response)[0]["diagnostics"]


def test_body_over_the_limit_is_413(make_app, order_sign_request):
    client = make_app(max_body_bytes=2048).test_client()
    response = client.post(ORDER_SIGN, json=order_sign_request)
    assert response.status_code == 413
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_wrong_method_is_405_json(client):
    response = client.delete("/cds-services")
    assert response.status_code == 405
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "GET" in response.headers["Allow"]


MALFORMED_BODIES = [
    b"", b"null", b"[]", b"42", b'"hook"', b"{", b"{'hook': 1}", b"\xff\xfe\x00garbage",
    b'{"hook": NaN}', b"[" * 100000 + b"]" * 100000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b'{"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": null}',
    b'{"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": {"draftOrders": 1}}',
    b'{"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", '
    b'"context": {"userId": "Practitioner/1", "patientId": "1", "draftOrders": {"resourceType": "Bundle", '
    b'"entry": [null, 1, {"resource": {"resourceType": 5}}]}}}',
    b'{"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", '
    b'"context": {"userId": "Practitioner/1", "patientId": "1", "draftOrders": {"resourceType": "Bundle"}}, '
    b'"prefetch": {"conditions": {"resourceType": "Bundle", "entry": "x"}}}',
    b'{"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", '
    b'"context": {"userId": "Practitioner/1", "patientId": "1", "draftOrders": {"resourceType": "Bundle"}}, '
    b'"prefetch": {"conditions": {"resourceType": "Bundle", "entry": [1, null, {"resource": []}]}}}',
    b'{"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", '
    b'"context": {"userId": "Practitioner/1", "patientId": "1", "draftOrders": {"resourceType": "Bundle", '
    b'"entry": [{"resource": {"resourceType": "ServiceRequest", "status": 5}}]}}, "prefetch": {"conditions": null}}',
]


@pytest.mark.parametrize("raw", MALFORMED_BODIES, ids=range(len(MALFORMED_BODIES)))
def test_malformed_bodies_never_500(client, raw):
    response = client.post(ORDER_SIGN, data=raw, content_type="application/json")
    assert response.status_code < 500, response.data[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    if response.status_code != 200:
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"] and all(i["diagnostics"] for i in body["issue"])
    else:
        assert isinstance(body["cards"], list)


@pytest.mark.parametrize("element,value", [("link", 7), ("entry", 7), ("link", "next"), ("entry", {"a": 1})])
def test_bundle_elements_of_the_wrong_form_are_no_items(client, order_sign_request, element, value):
    """Found by the fuzzer: a Bundle whose link or entry is not an array broke the call."""
    order_sign_request["prefetch"]["diagnosticReports"][element] = value
    response = client.post(ORDER_SIGN, json=order_sign_request)
    assert response.status_code == 200


@pytest.mark.parametrize("element,value", [("note", 5), ("presentedForm", "x"), ("content", 3)])
def test_unread_arrays_of_the_wrong_form_do_not_break_the_call(client, order_sign_request, element, value):
    resource = {"note": order_sign_request["prefetch"]["conditions"]["entry"][0]["resource"],
                "presentedForm": order_sign_request["prefetch"]["diagnosticReports"]["entry"][0]["resource"],
                "content": order_sign_request["prefetch"]["documentReferences"]["entry"][0]["resource"]}[element]
    resource[element] = value
    response = client.post(ORDER_SIGN, json=order_sign_request)
    assert response.status_code == 200


@pytest.mark.parametrize("field", ["fhirServer", "fhirAuthorization", "prefetch", "extension"])
def test_null_optional_elements_are_refused(client, order_sign_request, field):
    """CDS Hooks: elements SHALL NOT be null; an optional element without a value is omitted."""
    order_sign_request[field] = None
    response = client.post(ORDER_SIGN, json=order_sign_request)
    assert response.status_code == 400
    assert field in _expressions(response)


def test_null_context_field_is_refused(client, order_sign_request):
    order_sign_request["context"]["encounterId"] = None
    response = client.post(ORDER_SIGN, json=order_sign_request)
    assert response.status_code == 400 and "context.encounterId" in _expressions(response)

"""order-select (issue 14): the order rules when an imaging or procedure order is selected, answered
about the selected orders only, on requests shaped as the CDS Hooks sandbox's PAMA Imaging screen
sends them (fhir_fixtures/sandbox/, built by build_sandbox.py, which says where the shape comes from).

Done when: the PAMA request (CPT 72141, SNOMED CT reason "Cervical radiculopathy (disorder)") on a
record documenting a C2 radiculopathy answers one card proposing M54.11 as the order's reason; the
same call with a knee MRI answers {"cards": []}; a draft order not selected gets no card; a
selection naming no order of draftOrders is a 400.
"""
from __future__ import annotations

import copy
import importlib.util
import json

import pytest

from service.cards import CardCatalogue, contract_problems
from service.services import SERVICES
from service.terminology import ICD10CM

from .support import FIXTURES, fresh

ORDER_SELECT = "/cds-services/spine-coding-order-select"
SNOMED = "http://snomed.info/sct"
SANDBOX = FIXTURES / "sandbox"
CATALOGUE = CardCatalogue()

_spec = importlib.util.spec_from_file_location("build_sandbox", SANDBOX / "build_sandbox.py")
build_sandbox = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_sandbox)


def _request(name: str) -> dict:
    return fresh(json.loads((SANDBOX / name).read_text()))


def _call(client, body) -> tuple[int, dict]:
    response = client.post(ORDER_SELECT, json=body)
    return response.status_code, response.get_json()


def _pama(displays: bool = False) -> dict:
    body = _request("order-select_pama_c2-radiculopathy.json")
    if displays:  # the newer screens send their code lists' codings, display included
        body["context"]["draftOrders"]["entry"][0]["resource"] = build_sandbox.service_request(
            build_sandbox.MRI_CERVICAL, build_sandbox.CERVICAL_RADICULOPATHY, displays=True)
    return body


# ------------------------------------------------------------------------------- done when
@pytest.mark.parametrize("displays", [False, True], ids=["as-pama.jsx-sends-it", "with-displays"])
def test_the_pama_request_on_a_c2_radiculopathy_answers_one_card_proposing_m54_11(client, displays):
    body = _pama(displays)
    order = copy.deepcopy(body["context"]["draftOrders"]["entry"][0]["resource"])
    status, answer = _call(client, body)
    assert status == 200, answer
    assert list(answer) == ["cards"] and len(answer["cards"]) == 1
    card = answer["cards"][0]
    payload = card["extension"]["spine-coding-cds"]
    assert (payload["rule"], payload["proposedCodes"], payload["currentCodes"]) == ("ORD-DIAGNOSIS", ["M54.11"], [])
    assert contract_problems(card, CATALOGUE) == []
    assert card["summary"] == ("Advanced cervical imaging ordered for Cervical radiculopathy (SNOMED CT); "
                               "the record supports M54.11")
    assert "**Cervical radiculopathy (disorder)** (SNOMED CT 54404000)" in card["detail"]
    assert "**M54.12** (Radiculopathy, cervical region)" in card["detail"]
    assert any("C2 radiculopathy" in e["text"] for e in payload["evidence"])
    # the suggestion updates the draft order's reason: the ICD-10-CM coding added, the SNOMED CT one kept
    [suggestion] = card["suggestions"]
    assert suggestion["label"] == "Add M54.11 to the order's reason"
    # the order's reason, and the problem list's Condition the reason names: coded in SNOMED CT only,
    # it is read as its ICD-10-CM twin (M54.12) and gets M54.11 beside its SNOMED CT coding (issue 15)
    action, condition = suggestion["actions"]
    assert condition["type"] == "update" and condition["resource"]["resourceType"] == "Condition"
    assert [c["code"] for c in condition["resource"]["code"]["coding"]] == ["M54.11", "54404000"]
    assert action["type"] == "update"
    updated = action["resource"]
    assert updated["reasonCode"] == [{"coding": [
        {"system": ICD10CM, "code": "M54.11", "display": "Radiculopathy, occipito-atlanto-axial region"},
        *order["reasonCode"][0]["coding"]]}]
    assert {k: v for k, v in updated.items() if k != "reasonCode"} == \
        {k: v for k, v in order.items() if k != "reasonCode"}  # every other element as the sandbox sent it


def test_the_same_call_with_a_knee_mri_answers_no_cards(client):
    status, answer = _call(client, _request("order-select_pama_knee-mri.json"))
    assert (status, answer) == (200, {"cards": []})


def test_a_draft_order_not_selected_gets_no_card(client):
    """The cervical MRI would get the card; it is a draft order of the session, not the one selected."""
    body = _request("order-select_pama_not-selected.json")
    assert _call(client, body) == (200, {"cards": []})
    # the same orders with the cervical MRI selected: its card, and only about it
    body = fresh(body)
    body["context"]["selections"] = ["ServiceRequest/example-request-id"]
    status, answer = _call(client, body)
    assert [c["suggestions"][0]["actions"][0]["resource"]["id"] for c in answer["cards"]] == ["example-request-id"]
    # both selected: still one card, about the cervical MRI (the knee MRI has nothing to fix)
    body = fresh(body)
    body["context"]["selections"] = ["ServiceRequest/knee-mri-request", "ServiceRequest/example-request-id"]
    status, answer = _call(client, body)
    assert len(answer["cards"]) == 1


def test_a_selection_naming_no_order_of_draft_orders_is_a_400_naming_it(client):
    status, outcome = _call(client, _request("order-select_pama_missing-selection.json"))
    assert status == 400
    assert outcome["resourceType"] == "OperationOutcome"
    [issue] = outcome["issue"]
    assert issue["expression"] == ["context.selections[0]"]
    assert "ServiceRequest/no-such-order" in issue["diagnostics"] and "draftOrders" in issue["diagnostics"]


# ---------------------------------------------------------------------------------- requests
@pytest.mark.parametrize("selections, where, words", [
    (None, "context.selections", "selections is required by the order-select hook"),
    ("ServiceRequest/example-request-id", "context.selections", "must be an array of references"),
    ([7], "context.selections[0]", "must be a reference such as ServiceRequest/123"),
    (["example-request-id"], "context.selections[0]", "must be a reference such as ServiceRequest/123"),
    (["ServiceRequest/example-request-id", "MedicationRequest/example-request-id"], "context.selections[1]",
     "is not an entry of draftOrders"),
], ids=["missing", "a-string", "a-number", "no-type", "wrong-type"])
def test_selections_are_checked_with_the_request(client, selections, where, words):
    body = _pama()
    if selections is None:
        del body["context"]["selections"]
    else:
        body["context"]["selections"] = selections
    status, outcome = _call(client, body)
    assert status == 400
    assert [(i["expression"], words in i["diagnostics"]) for i in outcome["issue"]] == [([where], True)]


def test_no_selection_answers_no_cards(client):
    body = _pama()
    body["context"]["selections"] = []
    assert _call(client, body) == (200, {"cards": []})


def test_a_medication_order_selected_gets_no_card(client):
    """Imaging and procedure orders only: a MedicationRequest selection (the sandbox's Rx View) is no
    order these rules read, even with a spine reason."""
    body = _pama()
    medication = {"resourceType": "MedicationRequest", "id": "rx-1", "status": "draft", "intent": "order",
                  "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                            "code": "197696"}]},
                  "subject": {"reference": "Patient/pama-1"},
                  "reasonCode": [{"coding": [{"system": SNOMED, "code": "54404000"}]}]}
    body["context"]["draftOrders"]["entry"].append({"resource": medication})
    body["context"]["selections"] = ["MedicationRequest/rx-1"]
    assert _call(client, body) == (200, {"cards": []})


def test_a_snomed_reason_the_map_does_not_list_keeps_todays_behaviour(client):
    """The sandbox's default PAMA order (lumbar CT for 279039007 Low back pain): no reason the rules read."""
    body = _pama()
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"]["coding"][0]["code"] = "72133"
    order["reasonCode"][0]["coding"][0]["code"] = "279039007"
    assert _call(client, body) == (200, {"cards": []})


def test_order_sign_reads_a_snomed_reason_too(client):
    """The same PAMA order at signing (the sandbox's order-sign trigger of the PAMA screen sends the same
    context, selections included): the same card, through the order-sign service."""
    body = _pama()
    body["hook"] = "order-sign"
    response = client.post("/cds-services/spine-coding-order-sign", json=body)
    assert response.status_code == 200
    [card] = response.get_json()["cards"]
    assert card["extension"]["spine-coding-cds"]["proposedCodes"] == ["M54.11"]


# --------------------------------------------------------------------------------- discovery
def test_discovery_declares_order_select_with_order_signs_prefetch(client):
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    entry = services["spine-coding-order-select"]
    assert entry == SERVICES["spine-coding-order-select"].discovery_entry()
    assert entry["hook"] == "order-select"
    assert entry["prefetch"] == services["spine-coding-order-sign"]["prefetch"]


def test_the_openapi_document_describes_selections(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    context = schemas["OrderSelectContext"]
    assert context["required"] == ["userId", "patientId", "selections", "draftOrders"]
    assert context["properties"]["selections"]["type"] == "array"
    assert context["properties"]["selections"]["items"]["pattern"]


def test_committed_sandbox_fixtures_match_their_builder():
    expected = build_sandbox.rendered()
    on_disk = {p.name: p.read_text() for p in SANDBOX.glob("*.json")}
    assert on_disk == expected, "run: .venv/bin/python fhir_fixtures/sandbox/build_sandbox.py"

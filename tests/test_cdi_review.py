"""The CDI review (issue 14): an opt-in patient-view service, `spine-coding-cdi-review`.

Off by default (absent from discovery and /openapi.json, 404 naming SPINE_CDS_CDI_REVIEW on its
endpoint); with SPINE_CDS_CDI_REVIEW=true, the documentation queries and specificity cards of the
current encounter, every one `info` (service/cdi_review.py). The records are the vignettes
(fhir_fixtures/vignettes/) sent as patient-view, and the sandbox's patient-view request
(fhir_fixtures/sandbox/patient-view_sandbox.json, as the CDS Hooks sandbox's Patient View sends it).
"""
from __future__ import annotations

import base64
import copy
import json

import pytest

from service import cdi_review
from service.cards import CardCatalogue, contract_problems
from service.record import PatientRecord
from service.services import CDI_REVIEW_KINDS, SERVICES

from .support import FIXTURES, fresh, load_fixture, searchset

CDI = "/cds-services/spine-coding-cdi-review"
ENCOUNTER_SIGN = "/cds-services/spine-coding-encounter-sign"
SANDBOX = FIXTURES / "sandbox"
CATALOGUE = CardCatalogue()
KEY = "spine-coding-cds"
# The encounter-sign vignettes: every record-wide rule, firing and silent.
VIGNETTES = sorted(p.name for p in (FIXTURES / "vignettes").glob("*.json")
                   if json.loads(p.read_text())["hook"] in ("encounter-sign", "encounter-discharge"))


@pytest.fixture
def cdi(make_app):
    return make_app(cdi_review=True).test_client()


def _as_patient_view(name: str) -> dict:
    body = fresh(load_fixture(f"vignettes/{name}"))
    body["hook"] = "patient-view"
    return body


def _summary(card: dict) -> tuple:
    payload = card["extension"][KEY]
    return payload["rule"], card["source"]["topic"]["code"], tuple(payload["proposedCodes"]), \
        tuple(payload["currentCodes"])


# ------------------------------------------------------------------------------ off by default
def test_off_by_default_absent_from_discovery_and_openapi_and_404_naming_the_setting(client):
    services = client.get("/cds-services").get_json()["services"]
    assert "spine-coding-cdi-review" not in {s["id"] for s in services}
    assert "patient-view" not in {s["hook"] for s in services}
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [p for p in paths if "cdi-review" in p]
    response = client.post(CDI, json=_as_patient_view("spl-docs-fires-level-only.json"))
    assert response.status_code == 404
    [issue] = response.get_json()["issue"]
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "SPINE_CDS_CDI_REVIEW=true" in issue["diagnostics"] and "not enabled" in issue["diagnostics"]
    # an id no service has is still the plain 404
    response = client.post("/cds-services/spine-coding-nothing", json={})
    assert response.status_code == 404 and "SPINE_CDS_CDI_REVIEW" not in response.get_json()["issue"][0]["diagnostics"]


def test_enabled_it_is_in_discovery_and_openapi_from_its_declaration(cdi):
    services = {s["id"]: s for s in cdi.get("/cds-services").get_json()["services"]}
    assert set(services) == set(SERVICES)  # the four services and this one
    entry = services["spine-coding-cdi-review"]
    assert entry == SERVICES["spine-coding-cdi-review"].discovery_entry()
    assert entry["hook"] == "patient-view"
    # encounter-sign's record, the encounter optional, all the patient's notes and Encounters
    assert entry["prefetch"] == {
        "patient": "Patient/{{context.patientId}}",
        "conditions": "Condition?patient={{context.patientId}}",
        "procedures": "Procedure?patient={{context.patientId}}",
        "diagnosticReports": "DiagnosticReport?patient={{context.patientId}}",
        "encounter": "Encounter/{{context.encounterId}}",
        "encounters": "Encounter?patient={{context.patientId}}",
        "documentReferences": "DocumentReference?patient={{context.patientId}}",
    }
    document = cdi.get("/openapi.json").get_json()
    assert f"{CDI}" in document["paths"] and f"{CDI}/feedback" in document["paths"]
    assert document["components"]["schemas"]["PatientViewContext"]["required"] == ["userId", "patientId"]


def test_check_config_shows_the_setting():
    from service.config import Settings

    assert Settings.from_env({}).describe()["cdi_review"] is False
    assert Settings.from_env({"SPINE_CDS_CDI_REVIEW": "true"}).cdi_review is True


# ------------------------------------------------------------------------------ the done-when
def test_a_record_with_documentation_opportunities_gets_info_cards(cdi):
    """M43.11 from the diagnosis text, the slip's level documented but not its etiology: the
    specificity card and the documentation query, both info."""
    response = cdi.post(CDI, json=_as_patient_view("spl-specificity-fires-from-the-diagnosis-text.json"))
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    assert [(_summary(c)[:2], c["indicator"]) for c in cards] == [
        (("SPL-DOCS", "missing-documentation"), "info"), (("SPL-SPECIFICITY", "specificity"), "info")]
    for card in cards:
        assert contract_problems(card, CATALOGUE) == []
    query = cards[0]
    assert query["selectionBehavior"] == "at-most-one" and len(query["suggestions"]) >= 3  # a compliant query


def test_a_record_whose_rule_would_give_a_critical_reroute_gets_no_critical_card(client, cdi):
    name = "spl-trauma-fires-nondisplaced-type-ii-dens.json"
    signed = client.post(ENCOUNTER_SIGN, json=fresh(load_fixture(f"vignettes/{name}"))).get_json()["cards"]
    assert [(c["indicator"], _summary(c)[:2]) for c in signed] == [("critical", ("SPL-TRAUMA", "reroute"))]
    # the reroute is not shown, and nothing it overrules is shown in its place
    assert cdi.post(CDI, json=_as_patient_view(name)).get_json() == {"cards": []}


def test_a_well_coded_record_gets_no_cards(cdi):
    assert cdi.post(CDI, json=_as_patient_view("well-documented-record-is-silent.json")).get_json() == {"cards": []}


@pytest.mark.parametrize("name", VIGNETTES)
def test_every_vignette_shows_what_encounter_sign_shows_of_the_kinds_as_info(client, cdi, name):
    """The same arbitration, less the kinds the view leaves out: nothing shown contradicts what
    encounter-sign says, and no card is warning or critical."""
    signed = client.post(ENCOUNTER_SIGN, json=dict(fresh(load_fixture(f"vignettes/{name}")),
                                                   hook="encounter-sign")).get_json()["cards"]
    response = cdi.post(CDI, json=_as_patient_view(name))
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    assert {c["indicator"] for c in cards} <= {"info"}
    assert {c["source"]["topic"]["code"] for c in cards} <= CDI_REVIEW_KINDS
    assert [_summary(c) for c in cards] == [_summary(c) for c in signed
                                            if c["source"]["topic"]["code"] in CDI_REVIEW_KINDS]
    for card in cards:
        assert contract_problems(card, CATALOGUE) == []


def test_the_kinds_shown_and_left_out_are_the_card_contracts():
    assert CDI_REVIEW_KINDS == {"missing-documentation", "specificity"}
    assert CDI_REVIEW_KINDS < set(CATALOGUE.kinds)
    # every rule's kinds, variants included: those a CDI review shows exist
    kinds = {cdi_review.kind_of(type("C", (), {"rule": r, "variant": v})(), CATALOGUE)
             for r, t in CATALOGUE.templates.items() for v in [None, *t.variants]}
    assert CDI_REVIEW_KINDS <= kinds and {"reroute", "excludes1-conflict", "medical-necessity"} <= kinds


# ------------------------------------------------------------------------------ feedback
def test_feedback_on_its_cards_is_tied_to_the_rule_and_hides_the_card(make_app):
    app = make_app(cdi_review=True)
    client = app.test_client()
    body = _as_patient_view("spl-docs-fires-level-only.json")
    response = client.post(CDI, json=body)
    [card] = response.get_json()["cards"]
    response.close()  # the issued cards are recorded once the answer is sent
    store = app.extensions["spine_cds"].store
    [issued] = store.issued_rows()
    assert (issued["service_id"], issued["rule"], issued["indicator"], issued["hook"]) == (
        "spine-coding-cdi-review", "SPL-DOCS", "info", "patient-view")
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:00:00Z",
            "overrideReason": {"reason": {"code": "provider-will-be-queried",
                                          "system": "urn:spine-coding-cds:override-reason"}}}
    summary = client.post(CDI + "/feedback", json={"feedback": [item]}).get_json()
    assert summary == {"received": 1, "stored": 1, "duplicates": 0, "unknownCards": []}
    [row] = store.feedback_rows()
    assert row["known_card"] and row["rule"] == "SPL-DOCS" and row["service_id"] == "spine-coding-cdi-review"
    # overridden with a reason: not shown again in this encounter
    assert client.post(CDI, json=fresh(body)).get_json() == {"cards": []}


# ------------------------------------------------------------------------------ the encounter
def _encounter(eid: str, status: str, start: str | None, patient: str = "vp-1") -> dict:
    resource = {"resourceType": "Encounter", "id": eid, "status": status,
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": f"Patient/{patient}"}}
    if start:
        resource["period"] = {"start": start}
    return resource


def _dated(client, body) -> dict | None:
    """The answer's codeSet: which day the call was dated by, and from what (encounter or today)."""
    answer = client.post(CDI, json=body).get_json()
    code_set = answer.get("extension", {}).get(KEY, {}).get("codeSet")
    return code_set and (code_set["dateFrom"], code_set["date"])


@pytest.fixture
def dated_cdi(make_app):
    """The packaged release's own period (derived), so that the answer says the day it is dated by."""
    return make_app(cdi_review=True, tabular_effective="").test_client()


def test_the_current_encounter_is_the_contexts_else_the_in_progress_one_else_the_latest_finished(dated_cdi):
    body = _as_patient_view("spl-docs-fires-level-only.json")
    # the context's (its Encounter prefetched as at encounter-sign)
    assert _dated(dated_cdi, fresh(body)) == ("encounter", "2026-11-20")
    # no encounterId: from the patient's Encounters
    del body["context"]["encounterId"]
    del body["prefetch"]["encounter"]
    encounters = [_encounter("e-old", "finished", "2026-10-01T08:00:00-05:00"),
                  _encounter("e-now", "in-progress", "2026-10-20T08:00:00-05:00"),
                  _encounter("e-last", "finished", "2026-11-02"),
                  _encounter("e-planned", "planned", "2026-12-24")]
    body["prefetch"]["encounters"] = searchset(*encounters)
    assert _dated(dated_cdi, fresh(body)) == ("encounter", "2026-10-20")  # in progress: the chart is open in it
    body["prefetch"]["encounters"] = searchset(*[e for e in encounters if e["id"] != "e-now"])
    assert _dated(dated_cdi, fresh(body)) == ("encounter", "2026-11-02")  # the latest finished
    # two as recent: none can be told, the whole record (dated today)
    body["prefetch"]["encounters"] = searchset(_encounter("a", "in-progress", "2026-10-20"),
                                               _encounter("b", "in-progress", "2026-10-20T23:00:00Z"))
    assert _dated(dated_cdi, fresh(body))[0] == "today"
    body["prefetch"]["encounters"] = searchset()
    assert _dated(dated_cdi, fresh(body))[0] == "today"
    assert dated_cdi.post(CDI, json=fresh(body)).status_code == 200


def test_the_chosen_encounter_is_the_calls_for_the_notes_the_ranks_and_the_suppression_window():
    record = PatientRecord("patient-view", "h", "vp-1", None)
    for resource in (_encounter("e1", "finished", "2026-10-01"), _encounter("e2", "finished", "2026-10-05")):
        record.raw[f"Encounter/{resource['id']}"] = resource
    cdi_review.current_encounter(record, SERVICES["spine-coding-cdi-review"].view)
    assert record.encounter_id == "e2" and record.encounter.id == "e2"
    # named by the context: that one, and the patient's other Encounters are not missed
    record = PatientRecord("patient-view", "h", "vp-1", "e1")
    record.raw["Encounter/e1"] = _encounter("e1", "finished", "2026-10-01")
    record.unavailable["encounters"] = "not in prefetch"
    cdi_review.current_encounter(record, SERVICES["spine-coding-cdi-review"].view)
    assert record.encounter.id == "e1" and "encounters" not in record.unavailable
    # none in progress or finished: no encounter, the whole record
    record = PatientRecord("patient-view", "h", "vp-1", None)
    record.raw["Encounter/p"] = _encounter("p", "planned", "2026-12-01")
    record.encounter = object()
    cdi_review.current_encounter(record, SERVICES["spine-coding-cdi-review"].view)
    assert record.encounter is None and record.encounter_id is None


def test_the_chosen_encounter_is_the_one_the_context_would_name_notes_of_others_are_prior(cdi):
    """All the patient's notes come (documentReferences is patient-wide): an earlier encounter's note
    documents what this encounter's does not. Chosen from the Encounters, the call is the one the
    context naming it makes (that note read as prior); with no current encounter, the whole record."""
    body = _as_patient_view("spl-docs-fires-level-only.json")
    note = copy.deepcopy(body["prefetch"]["documentReferences"]["entry"][0]["resource"])
    note.update(id="note-0", date="2025-01-10", context={"encounter": [{"reference": "Encounter/ve-0"}]})
    note["content"][0]["attachment"]["data"] = base64.b64encode(
        b"Spine clinic note. Degenerative C1-C2 spondylolisthesis on MRI of the cervical spine. Denies trauma.").decode()
    body["prefetch"]["documentReferences"]["entry"].append({"resource": note})
    named = [_summary(c) for c in cdi.post(CDI, json=fresh(body)).get_json()["cards"]]
    assert named == [("SPL-DOCS", "missing-documentation", (), ("M43.11",))]

    chosen = fresh(body)
    del chosen["context"]["encounterId"]
    encounter = chosen["prefetch"].pop("encounter")
    earlier = dict(copy.deepcopy(encounter), id="ve-0", status="finished", period={"start": "2025-01-10"})
    chosen["prefetch"]["encounters"] = searchset(dict(encounter, status="in-progress"), earlier)
    assert [_summary(c) for c in cdi.post(CDI, json=chosen).get_json()["cards"]] == named

    whole = fresh(chosen)
    whole["prefetch"]["encounters"] = searchset()  # no encounter: every note is this encounter's
    assert cdi.post(CDI, json=whole).get_json() == {"cards": []}


# ------------------------------------------------------------------------------ the sandbox
def test_the_sandboxs_patient_view_request_gets_the_visits_specificity_card_as_info(dated_cdi):
    """No encounterId (the sandbox sends none): the finished visit of the Encounters prefetch is the
    current encounter; its M54.10 with a C2 root documented is M54.11, dated 2026-10-27, outside the
    packaged release's period: the card says so, without the suggestion that would set the code."""
    body = json.loads((SANDBOX / "patient-view_sandbox.json").read_text())
    assert "encounterId" not in body["context"] and "encounter" not in body["prefetch"]
    answer = dated_cdi.post(CDI, json=body).get_json()
    [card] = answer["cards"]
    assert card["indicator"] == "info"
    # the visit's M54.10 and the problem list's SNOMED CT-only "Cervical radiculopathy" (read as M54.12,
    # issue 15): one proposal, M54.11, for both
    assert _summary(card) == ("RAD-SPECIFICITY", "specificity", ("M54.11",), ("M54.12", "M54.10"))
    assert card["summary"].startswith("Documentation names the C2 root: M54.11 is more specific than")
    assert "coded in SNOMED CT only (54404000" in " ".join(card["detail"].split())
    code_set = answer["extension"][KEY]["codeSet"]
    assert (code_set["dateFrom"], code_set["date"], code_set["covered"]) == ("encounter", "2026-10-27", False)
    assert "suggestions" not in card and "does not cover this encounter (2026-10-27)" in card["detail"]
    assert "unavailable" not in answer["extension"][KEY]

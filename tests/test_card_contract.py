"""Cards as CDS Hooks 2.0 and the card contract require them."""
from __future__ import annotations

import copy
import uuid

import pytest

from service.cards import Action, Card, CardCatalogue, Suggestion, contract_problems
from service.findings import Evidence

CATALOGUE = CardCatalogue()


VALUES = {"current": "M43.10", "current_display": "Spondylolisthesis, site unspecified", "proposed": "M43.11",
          "proposed_display": "Spondylolisthesis, occipito-atlanto-axial region",
          "region": "C0-C2 (occipito-atlanto-axial)", "level": "C1 on C2"}


def _card(**overrides) -> Card:
    fields = dict(
        rule="SPL-SPECIFICITY", values=VALUES,
        current_codes=["M43.10"], proposed_codes=["M43.11"],
        evidence=[Evidence("DiagnosticReport/dr-mri-1", "conclusion", "anterolisthesis of <b>C1</b> on C2",
                           date="2026-11-02T14:30:00-05:00")],
        suggestions=[Suggestion("recode", [Action("update", "Update the Condition",
                                                  {"resourceType": "Condition", "id": "c1"})])],
    )
    fields.update(overrides)
    return Card(**fields)


def test_a_full_card_conforms():
    card = _card().to_json(CATALOGUE, "https://cds.test")
    assert contract_problems(card, CATALOGUE) == []
    assert card["source"] == {"label": "Spine Coding CDS", "url": "https://cds.test/rules/SPL-SPECIFICITY",
                              "topic": {"system": "urn:spine-coding-cds:card-kind", "code": "specificity",
                                        "display": "More specific code"}}
    assert card["indicator"] == "warning"  # the kind's default
    assert card["selectionBehavior"] == "at-most-one"
    assert [r["code"] for r in card["overrideReasons"]] == [
        "documentation-supports-current-code", "provider-will-be-queried", "not-clinically-applicable",
        "already-addressed"]
    payload = card["extension"]["spine-coding-cds"]
    assert payload["rule"] == "SPL-SPECIFICITY" and payload["proposedCodes"] == ["M43.11"]
    assert payload["evidence"][0]["assertion"] == "affirmed"
    assert uuid.UUID(card["uuid"]) and uuid.UUID(card["suggestions"][0]["uuid"])
    assert card["summary"] == "Documentation places the slip at C1 on C2: M43.11 is more specific than M43.10"
    assert card["suggestions"][0]["label"] == "Recode as M43.11 Spondylolisthesis, occipito-atlanto-axial region"


def test_quoted_evidence_cannot_inject_markdown_or_html():
    detail = _card().to_json(CATALOGUE, "https://cds.test")["detail"]
    assert "<b>" not in detail and "\\<b\\>C1\\</b\\>" in detail
    assert "(DiagnosticReport/dr-mri-1, conclusion, 2026-11-02)" in detail


def test_a_prompt_card_omits_empty_optional_fields():
    card = _card(rule="SPL-DOCS", values={"current": "M43.11", "proposed_by_level": False}, suggestions=[],
                 proposed_codes=[], missing_documentation=["region", "imaging"]).to_json(CATALOGUE, "https://cds.test")
    assert contract_problems(card, CATALOGUE) == []
    assert "suggestions" not in card and "selectionBehavior" not in card
    assert card["indicator"] == "info"
    # Outside the query step (tests/test_queries.py) the card lists what the record does not state.
    assert card["summary"] == ("Documentation query on the spondylolisthesis: the spinal level or region; "
                               "imaging that confirms the finding at that level")
    assert "The record does not state:\n- the spinal level or region" in card["detail"]
    assert "to support" not in card["detail"]


def test_a_template_may_carry_a_rationale_for_the_rule_page():
    assert "rationale" in CATALOGUE.templates["ORD-DIAGNOSIS"].text
    assert "MS-DRG" in CATALOGUE.templates["ORD-DIAGNOSIS"].text["rationale"]
    detail = CATALOGUE.templates["ORD-DIAGNOSIS"].text["detail"]
    assert "denial" not in detail and "rationale" not in detail


def test_uuids_are_fresh_for_every_card_and_suggestion():
    a, b = _card().to_json(CATALOGUE, "https://x"), _card().to_json(CATALOGUE, "https://x")
    assert a["uuid"] != b["uuid"] and a["suggestions"][0]["uuid"] != b["suggestions"][0]["uuid"]


BREAKAGES = {
    "long summary": (lambda c: c.update(summary="x" * 140), "summary"),
    "no uuid": (lambda c: c.pop("uuid"), "uuid"),
    "bad indicator": (lambda c: c.update(indicator="hard-stop"), "indicator"),
    "no selectionBehavior": (lambda c: c.pop("selectionBehavior"), "selectionBehavior"),
    "empty detail": (lambda c: c.update(detail=""), "detail is empty"),
    "null field": (lambda c: c.update(links=None), "links is empty"),
    "unknown kind": (lambda c: c["source"]["topic"].update(code="advice"), "topic"),
    "relative source url": (lambda c: c["source"].update(url="/rules/x"), "source.url"),
    "override without display": (lambda c: c["overrideReasons"][0].pop("display"), "overrideReasons[0]"),
    "suggestion without uuid": (lambda c: c["suggestions"][0].pop("uuid"), "suggestions[0]"),
    "update without resource": (lambda c: c["suggestions"][0]["actions"][0].pop("resource"), "whole resource"),
    "no extension": (lambda c: c.pop("extension"), "extension"),
    "bad assertion": (lambda c: c["extension"]["spine-coding-cds"]["evidence"][0].update(assertion="maybe"),
                      "evidence[0]"),
    "unknown documentation element": (
        lambda c: c["extension"]["spine-coding-cds"].update(missingDocumentation=["vibes"]), "vibes"),
    # structure the card model gives (service/wire.py), beyond the former hand-written checks
    "isRecommended not a boolean": (lambda c: c["suggestions"][0].update(isRecommended="yes"),
                                    "suggestions[0].isRecommended"),
    "action without a description": (lambda c: c["suggestions"][0]["actions"][0].pop("description"),
                                     "suggestions[0].actions[0].description"),
    "delete of nothing named": (lambda c: c["suggestions"][0]["actions"][0].update(type="remove"),
                                "suggestions[0].actions[0].type"),
    "proposedCodes not an array": (lambda c: c["extension"]["spine-coding-cds"].update(proposedCodes="M43.11"),
                                   "proposedCodes"),
    # the contract's vocabulary, which no schema states
    "another product": (lambda c: c["source"].update(label="Other CDS"), "source.label"),
    "foreign override reason": (lambda c: c["overrideReasons"][0].update(system="urn:other"), "overrideReasons[0]"),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_the_contract_check_catches(name):
    card = copy.deepcopy(_card().to_json(CATALOGUE, "https://cds.test"))
    mutate, expected = BREAKAGES[name]
    mutate(card)
    problems = contract_problems(card, CATALOGUE)
    assert any(expected in p for p in problems), problems


def test_the_contract_check_is_the_card_model_plus_the_vocabulary():
    """The structure comes from the card model (the schema of /openapi.json's cards), so a card
    the model refuses is refused by the contract check with the model's words; what is left in
    cards.py is what a schema cannot say (empties anywhere, the contract's vocabulary)."""
    from service import wire
    card = copy.deepcopy(_card().to_json(CATALOGUE, "https://cds.test"))
    card["suggestions"][0]["uuid"] = "not-a-uuid"
    card["source"]["topic"]["code"] = "advice"
    model = wire.card_problems(card)
    assert len(model) == 1 and model[0].startswith("suggestions[0].uuid: ")
    assert contract_problems(card, CATALOGUE) == model + ["source.topic must be a card kind of the contract"]


def test_every_rule_has_a_page_that_its_cards_link_to(client):
    index = client.get("/rules")
    assert index.status_code == 200 and index.mimetype == "text/html"
    for rule_id in CATALOGUE.templates:
        page = client.get(f"/rules/{rule_id}")
        assert page.status_code == 200, rule_id
        text = page.get_data(as_text=True)
        assert rule_id in text and CATALOGUE.templates[rule_id].title.replace("'", "&#39;") in text
        assert f'href="/rules/{rule_id}"' in index.get_data(as_text=True)


def test_unknown_rule_page_is_a_json_404(client):
    response = client.get("/rules/NOPE")
    assert response.status_code == 404 and response.get_json()["resourceType"] == "OperationOutcome"


def test_template_errors_are_refused_at_load(tmp_path):
    import shutil

    from service.cards import TemplateError
    for name in ("contract.toml", "_evidence.md", "_missing.md"):
        shutil.copy(CATALOGUE.directory / name, tmp_path / name)
    (tmp_path / "X-BAD.toml").write_text('title = "t"\nkind = "advice"\nindicator = "info"\nsource = "s"\n'
                                         'about = "a"\nsummary = "s"\ndetail = "d"\n')
    with pytest.raises(TemplateError, match="kind 'advice' is not a kind of the contract"):
        CardCatalogue(tmp_path)
    (tmp_path / "X-BAD.toml").write_text('title = "t"\nkind = "reroute"\nindicator = "info"\nsource = "s"\n'
                                         'about = "a"\nsummary = "{{ oops"\ndetail = "d"\n')
    with pytest.raises(TemplateError, match="template error"):
        CardCatalogue(tmp_path)

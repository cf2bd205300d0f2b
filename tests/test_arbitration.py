"""One arbitration (service/rules/resolve.py): what a coder checks across every card of a call.

The properties run over every vignette and every chart of the corpus: no resource gets two
proposals, no two cards contradict each other, no card repeats another's proposal, no
provider-facing text mentions reimbursement. The unit tests build candidate cards by hand and show
each principle deciding, so a broken resolver fails here and not only through a chart.
"""
from __future__ import annotations

import importlib.util
import json
import re
from types import SimpleNamespace

import pytest

from service.cards import Action, Card, Suggestion
from service.rules import check_templates, load_rules
from service.rules.resolve import CONFLICT_RULE, MADE_HERE, order_scope, resolve
from service.rules.tables import TABLES
from service.terminology import ICD10CM

from .support import FIXTURES, ROOT

_spec = importlib.util.spec_from_file_location("accuracy", ROOT / "bench" / "accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)

KEY = "spine-coding-cds"
CHARTS = accuracy.build_charts.load_all()
VIGNETTES = sorted(p.stem for p in (FIXTURES / "vignettes").glob("*.json"))


@pytest.fixture(scope="module")
def answers():
    answer = accuracy.client()
    out = {}
    for name in VIGNETTES:
        out[f"vignette {name}"] = answer(json.loads((FIXTURES / "vignettes" / f"{name}.json").read_text()))
    for chart in CHARTS:
        out[f"chart {chart['id']}"] = answer(accuracy.build_charts.build(chart))
    return out


def _touched(card: dict) -> set[str]:
    """The existing resources a card's suggestions would change (update or delete)."""
    out = set()
    for suggestion in card.get("suggestions", []):
        for action in suggestion.get("actions", []):
            if action["type"] == "delete":
                out.add(action["resourceId"])
            elif action["type"] == "update":
                out.add(f"{action['resource']['resourceType']}/{action['resource']['id']}")
    return out


def test_no_resource_gets_two_proposals_and_no_two_cards_contradict(answers):
    for where, answer in answers.items():
        owners: dict[str, str] = {}
        for card in answer["cards"]:
            for reference in _touched(card):
                assert reference not in owners, (
                    f"{where}: {reference} is changed by {owners[reference]} and "
                    f"{card['extension'][KEY]['rule']}")
                owners[reference] = card["extension"][KEY]["rule"]


def test_no_card_repeats_another_cards_proposal(answers):
    for where, answer in answers.items():
        seen: dict[str, str] = {}
        for card in answer["cards"]:
            payload = card["extension"][KEY]
            for code in payload["proposedCodes"]:
                assert code not in seen, f"{where}: {code} proposed by {seen[code]} and {payload['rule']}"
                seen[code] = payload["rule"]


_MONEY = re.compile(r"reimburse|payment|\bpaid\b|\bDRGs?\b|MS-DRG|denial|denied claim|prior[- ]authori[sz]ation|"
                    r"financial|revenue", re.IGNORECASE)


def test_no_provider_facing_text_mentions_reimbursement(answers):
    checked = 0
    for where, answer in answers.items():
        for card in answer["cards"]:
            texts = [card["summary"], card.get("detail", "")] + [s["label"] for s in card.get("suggestions", [])]
            for text in texts:
                assert not _MONEY.search(text), f"{where}: {card['extension'][KEY]['rule']}: {text[:200]}"
            checked += 1
    assert checked >= 100


def test_every_rule_has_its_template_and_every_template_its_rule():
    from service.cards import CardCatalogue

    catalogue = CardCatalogue()
    assert check_templates(catalogue.templates) == []
    assert check_templates(list(catalogue.templates) + ["NOT-A-RULE"]) == [
        "card template cards/NOT-A-RULE.toml belongs to no rule"]
    missing = [t for t in catalogue.templates if t != "SPL-DOCS"]
    assert check_templates(missing) == ["rule SPL-DOCS has no card template cards/SPL-DOCS.toml"]
    assert set(MADE_HERE) <= set(catalogue.templates)


def test_every_rule_has_a_strength():
    for rule_id in load_rules():
        assert TABLES.strength(rule_id) > 0, rule_id


# ------------------------------------------------------------------ units
class _Terminology:
    def display(self, code):
        return f"display of {code}"

    def exists(self, code):
        return True


def _condition(reference, code):
    return SimpleNamespace(reference=reference, code=code)


def _facts(*conditions):
    return SimpleNamespace(current=lambda firm=True: list(conditions), conditions=list(conditions), orders=[],
                           record=SimpleNamespace(patient_id="p1", encounter_id="e1"))


CONTEXT = SimpleNamespace(terminology=_Terminology(), hook="encounter-sign")


def _recode(rule, reference, code, variant=None, recommended=True):
    kind, cid = reference.split("/")
    resource = {"resourceType": kind, "id": cid, "code": {"coding": [{"system": ICD10CM, "code": code}]}}
    return Card(rule=rule, variant=variant, proposed_codes=[code], subject=reference,
                suggestions=[Suggestion("recode", [Action("update", "recode", resource)], is_recommended=recommended)])


def _query(rule, reference, premise):
    return Card(rule=rule, missing_documentation=["region"], subject=reference, premise=premise)


def _add(rule, basis, code, premise):
    resource = {"resourceType": "Condition", "code": {"coding": [{"system": ICD10CM, "code": code}]}}
    return Card(rule=rule, proposed_codes=[code], subject=basis, premise=premise,
                suggestions=[Suggestion("add", [Action("create", "add", resource)], is_recommended=True)])


def _remove_pair(rule, a, b, variant=None, keeps=False):
    return Card(rule=rule, variant=variant, subject=a, keeps=keeps, suggestions=[
        Suggestion("keep", [Action("delete", "remove", resource_id=b)]),
        Suggestion("keep", [Action("delete", "remove", resource_id=a)])])


def test_the_stronger_proposal_for_a_resource_wins():
    facts = _facts(_condition("Condition/c1", "M54.11"))
    shown = resolve([_recode("RAD-SPECIFICITY", "Condition/c1", "M54.12"),
                     _recode("RAD-EXCLUDES", "Condition/c1", "M50.11", variant="disc")], facts, CONTEXT)
    assert [(c.rule, c.proposed_codes) for c in shown] == [("RAD-EXCLUDES", ["M50.11"])]


def test_equal_strengths_that_disagree_become_one_card_that_asks():
    facts = _facts(_condition("Condition/c1", "M54.11"))
    shown = resolve([_recode("RAD-OCCIPITAL-NEURALGIA", "Condition/c1", "M54.81"),
                     _recode("RAD-EXCLUDES", "Condition/c1", "M50.11", variant="disc")], facts, CONTEXT)
    assert len(shown) == 1 and shown[0].rule == CONFLICT_RULE
    card = shown[0]
    assert sorted(card.proposed_codes) == ["M50.11", "M54.81"]
    assert [s.key for s in card.suggestions] == ["choose", "choose", "both", "other", "undetermined"]
    assert not any(s.is_recommended for s in card.suggestions)
    both = card.suggestions[2].actions  # two documented conditions: recode to the first, add the second
    assert [a.type for a in both] == ["update", "create"]
    assert both[1].resource["code"]["coding"][0]["code"] == card.proposed_codes[1]


def test_a_recode_wins_over_a_removal_of_equal_strength():
    facts = _facts(_condition("Condition/c1", "M43.11"), _condition("Condition/c2", "S12.112A"))
    remove = Card(rule="SPL-EXCLUDES", variant="acute-injury", subject="Condition/c1", suggestions=[
        Suggestion("keep_injury", [Action("delete", "remove", resource_id="Condition/c1")], is_recommended=True)])
    shown = resolve([remove, _recode("SPL-CONGENITAL", "Condition/c1", "Q76.2")], facts, CONTEXT)
    assert [c.rule for c in shown] == ["SPL-CONGENITAL"]


def test_at_order_sign_nothing_outside_the_scope_is_changed_or_merged():
    facts = _facts(_condition("Condition/c1", "M43.10"), _condition("Condition/c2", "M43.12"))
    order = _recode("ORD-DIAGNOSIS", "Condition/c1", "M43.11")
    other = _recode("SPL-SPECIFICITY", "Condition/c2", "M43.11")
    shown = resolve([order, other], facts, CONTEXT, scope={"Condition/c1", "ServiceRequest/o1"})
    assert [c.rule for c in shown] == ["ORD-DIAGNOSIS"]
    assert [a.type for a in shown[0].suggestions[0].actions] == ["update"]  # cond-2 is not deleted


def test_the_same_code_for_a_resource_is_proposed_once_by_the_stronger_card():
    facts = _facts(_condition("Condition/c1", "M54.12"))
    order = _recode("ORD-DIAGNOSIS", "Condition/c1", "M54.11")
    shown = resolve([_recode("RAD-SPECIFICITY", "Condition/c1", "M54.11"), order], facts, CONTEXT)
    assert [c.rule for c in shown] == ["ORD-DIAGNOSIS"]


def test_a_code_already_coded_is_not_proposed_again():
    facts = _facts(_condition("Condition/c1", "M54.11"), _condition("Condition/c2", "M50.11"))
    assert resolve([_recode("RAD-EXCLUDES", "Condition/c1", "M50.11", variant="disc")], facts, CONTEXT) == []
    assert resolve([_add("SPL-NEURO", "Condition/c1", "M50.11", "M43.11")], facts, CONTEXT) == []


def test_a_card_whose_premise_is_changed_is_moot_and_kept_when_it_is_not():
    facts = _facts(_condition("Condition/c1", "M43.10"))
    specific = _recode("SPL-SPECIFICITY", "Condition/c1", "M43.11")
    docs = _query("SPL-DOCS", "Condition/c1", "M43.11")
    assert [c.rule for c in resolve([specific, docs], facts, CONTEXT)] == ["SPL-DOCS", "SPL-SPECIFICITY"]
    trauma = _recode("SPL-TRAUMA", "Condition/c1", "S13.120A")
    neuro = _add("SPL-NEURO", "Condition/c1", "G99.2", "M43.11")
    assert [c.rule for c in resolve([trauma, docs, neuro, specific], facts, CONTEXT)] == ["SPL-TRAUMA"]


def test_keep_one_options_do_not_moot_a_card_about_either_code():
    facts = _facts(_condition("Condition/c1", "M54.11"), _condition("Condition/c2", "M79.2"))
    conflict = _remove_pair("RAD-EXCLUDES", "Condition/c1", "Condition/c2", variant="conflict")
    cause = _add("RAD-CAUSE", "Condition/c1", "M43.11", "M54.11")
    tabular = _remove_pair("TAB-EXCLUDES1", "Condition/c1", "Condition/c2")
    assert [c.rule for c in resolve([tabular, cause, conflict], facts, CONTEXT)] == ["RAD-CAUSE", "RAD-EXCLUDES"]


def test_a_decision_to_keep_unrelated_codes_silences_the_removal_cards_and_is_not_shown():
    facts = _facts(_condition("Condition/c1", "M43.11"), _condition("Condition/c2", "Q76.2"))
    keep = _remove_pair("SPL-EXCLUDES", "Condition/c1", "Condition/c2", variant="unrelated", keeps=True)
    tabular = _remove_pair("TAB-EXCLUDES1", "Condition/c1", "Condition/c2")
    specific = _recode("SPL-SPECIFICITY", "Condition/c1", "M43.12")
    assert [c.rule for c in resolve([keep, tabular, specific], facts, CONTEXT)] == ["SPL-SPECIFICITY"]


def test_one_rules_identical_proposals_for_two_conditions_are_one_card():
    facts = _facts(_condition("Condition/c1", "M43.10"), _condition("Condition/c2", "M43.10"))
    shown = resolve([_recode("SPL-SPECIFICITY", "Condition/c1", "M43.11"),
                     _recode("SPL-SPECIFICITY", "Condition/c2", "M43.11")], facts, CONTEXT)
    assert len(shown) == 1
    assert [a.resource["id"] for a in shown[0].suggestions[0].actions] == ["c1", "c2"]


class _ValueSets:
    def members(self, name):
        return {"advanced-cervical-imaging": {"72141"}}.get(name, set())


def _order(reference, cpt, reasons, conditions=()):
    return SimpleNamespace(reference=reference, cpt=tuple(cpt), reason_codes=tuple(reasons),
                           reason_conditions=tuple(conditions))


def test_order_scope_is_the_spine_orders_and_their_reasons():
    c1, c2 = _condition("Condition/c1", "M54.12"), _condition("Condition/c2", "M43.10")
    facts = SimpleNamespace(conditions=[c1, c2], orders=[_order("ServiceRequest/lab", ["85025"], ["E78.5"])])
    assert order_scope(facts, _ValueSets()) == set()
    facts.orders.append(_order("ServiceRequest/mri", ["72141"], ["M54.12"]))
    assert order_scope(facts, _ValueSets()) == {"ServiceRequest/mri", "Condition/c1"}
    facts.orders = [_order("ServiceRequest/pt", ["97110"], ["M43.10"], ["Condition/c2"])]
    assert order_scope(facts, _ValueSets()) == {"ServiceRequest/pt", "Condition/c2"}


# ------------------------------------------------------------------ the cap
def test_past_the_cap_the_strongest_cards_are_shown_and_one_card_names_the_rest():
    from service.rules.resolve import MORE_RULE, cap

    cards = [_query("SPL-DOCS", f"Condition/d{n}", "M43.11") for n in range(5)]
    cards += [_recode("SPL-TRAUMA", "Condition/t1", "S12.112A"), _recode("SPL-SPECIFICITY", "Condition/s1", "M43.11")]
    shown = cap(cards, SimpleNamespace(max_cards=4))
    assert len(shown) == 4 and shown[-1].rule == MORE_RULE
    assert {c.rule for c in shown[:-1]} >= {"SPL-TRAUMA", "SPL-SPECIFICITY"}  # strongest kept
    assert shown[-1].values["count"] == 4 and dict(shown[-1].values["rules"]) == {"SPL-DOCS": 4}
    assert cap(cards, SimpleNamespace(max_cards=7)) == cards


def _many_conditions(codes):
    body = json.loads((FIXTURES / "vignettes" / "spl-specificity-fires-m43.10-c1-on-c2.json").read_text())
    template = body["prefetch"]["conditions"]["entry"][0]["resource"]
    entries = []
    for n, code in enumerate(codes):
        resource = json.loads(json.dumps(template))
        resource["id"] = f"many-{n}"
        resource["code"] = {"coding": [{"system": ICD10CM, "code": code}]}
        entries.append({"resource": resource})
    body["prefetch"]["conditions"]["entry"] = entries
    return body


def test_an_exploding_record_answers_fast_with_a_bounded_answer():
    import time

    from service.app import create_app

    app = create_app()
    client = app.test_client()
    body = _many_conditions(["M43.11", "Q76.2"] * 150)  # was 22,500 cards and 61 MB
    client.post("/cds-services/spine-coding-encounter-sign", json=body)  # warm
    started = time.perf_counter()
    response = client.post("/cds-services/spine-coding-encounter-sign", json=body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    assert len(cards) <= 12 and len(response.data) < 200_000
    assert elapsed < 1.0, elapsed
    rules = [c["extension"][KEY]["rule"] for c in cards]
    assert rules.count("SPL-EXCLUDES") == 1  # one pair of codes, one card, removing every copy
    for suggestion in cards[rules.index("SPL-EXCLUDES")]["suggestions"]:
        assert len(suggestion["actions"]) == 150  # every copy of the code let go


def test_the_card_cap_is_a_setting_and_the_summary_card_keeps_the_contract():
    from service.app import create_app
    from service.cards import CardCatalogue, contract_problems

    app = create_app({"max_cards": 3})
    client = app.test_client()
    body = _many_conditions(["M43.10", "M43.1", "M54.1", "M54.19", "S12.110", "G54.2", "M54.11", "M79.2", "Q76.2"])
    cards = client.post("/cds-services/spine-coding-encounter-sign", json=body).get_json()["cards"]
    assert len(cards) == 3
    last = cards[-1]
    assert last["extension"][KEY]["rule"] == "RESOLVE-MORE" and last["indicator"] == "info"
    assert "more coding cards" in last["summary"]
    assert contract_problems(last, CardCatalogue()) == []


def test_excludes1_compares_a_bounded_number_of_codes_and_says_so():
    import simple_icd_10_cm as cm

    from service.app import create_app
    from service.rules.tabular import MAX_COMPARED

    codes = [c for c in cm.get_descendants("M50-M54") if cm.is_leaf(c)][:MAX_COMPARED + 10]
    client = create_app({"max_cards": 5}).test_client()
    answer = client.post("/cds-services/spine-coding-encounter-sign", json=_many_conditions(codes)).get_json()
    limits = {entry["limit"]: entry for entry in answer["extension"][KEY]["limits"]}
    assert limits["excludes1-codes-not-compared"]["count"] == 10
    assert limits["excludes1-codes-not-compared"]["max"] == MAX_COMPARED
    assert len(answer["cards"]) <= 5

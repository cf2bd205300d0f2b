"""Missing documentation asked as compliant queries (service/rules/queries.py, knowledge/queries.toml),
and provider-facing text without reimbursement talk.

Over every vignette and every chart: each card that names missing documentation (but SPL-TRAUMA
with a billable code, see queries.py) is a query: the clinical indicators quoted, one question,
its options as suggestions (at-most-one, none recommended) including "other" and "clinically
undetermined", and every option that maps to a code carrying the action that sets exactly that
code on the card's subject. No card's summary, detail or suggestion labels speak of
reimbursement, payment, DRGs, denials, prior authorization, billing, coverage or finances.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import tomllib
from types import SimpleNamespace

import pytest

from service.cards import Card, CardCatalogue, contract_problems
from service.findings import CodedCondition
from service.knowledge import OTHER, QUERIES, UNDETERMINED, QueryError, load_queries, parse_queries, queries
from service.rules.queries import ANSWER, NOT_ASKED, as_queries, asks
from service.services import SERVICES
from service.terminology import ICD10CM, Terminology

from .support import FIXTURES, ROOT

CATALOGUE = CardCatalogue()
TERMINOLOGY = Terminology()
QUERY = queries()

_spec = importlib.util.spec_from_file_location("build_vignettes_q", FIXTURES / "build_vignettes.py")
build_vignettes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_vignettes)
_spec = importlib.util.spec_from_file_location("build_charts_q", FIXTURES / "build_charts.py")
build_charts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_charts)

# Reimbursement talk, in the service's own words (quoted record text is the provider's and is not checked).
FORBIDDEN = re.compile(
    r"reimburs|\bpay(s|ment|ments|er|ers|ing)?\b|\bDRGs?\b|denial|prior[\s-]*auth|financ|\bbill(s|ing|ed|able)?\b"
    r"|\bcoverage\b|\bLCDs?\b|\baudit", re.IGNORECASE)


# ------------------------------------------------------------------ every card of the corpus
@pytest.fixture(scope="module")
def answered(tmp_path_factory):
    """(id, request, answer) for every vignette and every chart."""
    from service import create_app

    path = tmp_path_factory.mktemp("queries") / "spine.sqlite3"
    client = create_app({"database_url": f"sqlite:///{path}", "public_base_url": "https://cds.test"}).test_client()
    paths = {s.hook: f"/cds-services/{s.id}" for s in SERVICES.values()}
    requests = [(v["id"], json.loads((FIXTURES / "vignettes" / f"{v['id']}.json").read_text()))
                for v in build_vignettes.load_spec()]
    requests += [(c["id"], build_charts.build(c)) for c in build_charts.load_all()]
    out = []
    for name, body in requests:
        response = client.post(paths[body["hook"]], json=body)
        assert response.status_code == 200, (name, response.get_json())
        out.append((name, body, response.get_json()))
    return out


def _resources(value, found=None) -> dict:
    """Every FHIR resource of a hook request, by reference."""
    found = {} if found is None else found
    if isinstance(value, dict):
        if isinstance(value.get("resourceType"), str) and value.get("id"):
            found.setdefault(f"{value['resourceType']}/{value['id']}", value)
        for v in value.values():
            _resources(v, found)
    elif isinstance(value, list):
        for v in value:
            _resources(v, found)
    return found


def _icd_codes(resource: dict) -> list[str]:
    concepts = [resource.get("code")] if resource.get("resourceType") == "Condition" else resource.get("reasonCode")
    return [c["code"] for concept in concepts or [] for c in (concept or {}).get("coding") or []
            if c.get("system") == ICD10CM and c.get("code")]


def _is_query(card: dict) -> bool:
    payload = card["extension"]["spine-coding-cds"]
    if not payload.get("missingDocumentation"):
        return False
    # SPL-TRAUMA with a billable injury code is a reroute that names what is not stated (NOT_ASKED).
    return not (payload["rule"] == "SPL-TRAUMA" and payload["proposedCodes"]
                and all(TERMINOLOGY.is_billable(c) for c in payload["proposedCodes"]))


def _provider_text(card: dict) -> list[str]:
    detail = "\n".join(line for line in card.get("detail", "").splitlines() if not line.startswith('> "'))
    return [card["summary"], detail] + [s["label"] for s in card.get("suggestions", [])]


def test_the_corpus_has_queries_of_every_kind(answered):
    asked = {(c["extension"]["spine-coding-cds"]["rule"], QUERY.element_to_ask(
        c["extension"]["spine-coding-cds"]["missingDocumentation"]).name)
        for _, _, answer in answered for c in answer["cards"] if _is_query(c)}
    rules = {rule for rule, _ in asked}
    assert {"SPL-DOCS", "RAD-DOCS", "RAD-GENERIC-LEVEL", "ORD-FUSION-DOCS", "ORD-ANATOMY", "SPL-GENERIC-LEVEL",
            "RAD-CERVICALGIA", "SPL-TRAUMA"} <= rules, rules
    assert {"region", "etiology", "trauma-status", "radicular-findings", "conservative-care", "neurologic-findings",
            "electrodiagnostics", "fracture-detail"} <= {element for _, element in asked}


def test_every_missing_documentation_card_is_a_query(answered):
    checked = 0
    for name, body, answer in answered:
        resources = _resources(body)
        for card in answer["cards"]:
            if not _is_query(card):
                continue
            checked += 1
            where = (name, card["extension"]["spine-coding-cds"]["rule"])
            decided = {code for other in answer["cards"] if other is not card and not _is_query(other)
                       for s in other.get("suggestions", []) for a in s.get("actions", [])
                       for code in _icd_codes(a.get("resource") or {})}
            _check_query(card, resources, decided, where)
    assert checked >= 15


def _check_query(card: dict, resources: dict, decided: set[str], where) -> None:
    payload = card["extension"]["spine-coding-cds"]
    element = QUERY.element_to_ask(payload["missingDocumentation"])
    family = QUERY.family_of_card(element, payload["proposedCodes"] + payload["currentCodes"])
    options = element.options_for(family)
    question = QUERY.question(element, family)
    assert contract_problems(card, CATALOGUE) == [], where
    # The clinical indicators, then the question, never "to support <code>".
    assert '> "' in card["detail"] and question in card["detail"], where
    assert not re.search(r"to support \**[A-Z]\d", card["detail"] + card["summary"]), where
    # The options, as suggestions the clinician picks one of.
    suggestions = card["suggestions"]
    assert card["selectionBehavior"] == "at-most-one", where
    assert [s["label"] for s in suggestions] == [o.label for o in options], where
    assert {OTHER, UNDETERMINED} <= {s["label"] for s in suggestions}, where
    assert not any(s.get("isRecommended") for s in suggestions), where
    # Other elements the record does not state are listed, not asked.
    for other in payload["missingDocumentation"]:
        if other != element.name:
            assert "- " + CATALOGUE.documentation_label(other) in card["detail"], where
    set_codes = set()
    for option, suggestion in zip(options, suggestions):
        actions = suggestion.get("actions", [])
        if not option.codes:
            assert actions == [], (where, option.label)
            continue
        for action in actions:
            assert action["type"] == "update", (where, option.label)
            resource = action["resource"]
            reference = f"{resource['resourceType']}/{resource['id']}"
            original = resources[reference]
            before, after = _icd_codes(original), _icd_codes(resource)
            assert set(before) & set(payload["currentCodes"]) or before, where
            for old, new in zip(before, after):
                wanted = option.codes.get(QUERY.family_of(old, element.families))
                assert new == (wanted or old), (where, option.label, old, new)  # exactly that code, or untouched
            assert before != after, (where, option.label)
            set_codes |= set(after) - set(before)
        # A code other than the one coded (or given by another card) is set by an action.
        for code in payload["currentCodes"]:
            wanted = option.codes.get(QUERY.family_of(code, element.families))
            if wanted and wanted not in payload["currentCodes"] and wanted not in decided:
                assert actions, (where, option.label)
    # The card's own billable proposal is one of the answers.
    for code in payload["proposedCodes"]:
        if TERMINOLOGY.is_billable(code):
            assert code in set_codes, (where, code)


def test_no_card_speaks_of_reimbursement(answered):
    """The done-when of issue 10: over every card of every vignette and chart."""
    cards = [card for _, _, answer in answered for card in answer["cards"]]
    assert len(cards) >= 100
    for card in cards:
        for text in _provider_text(card):
            found = FORBIDDEN.search(text)
            assert not found, (card["extension"]["spine-coding-cds"]["rule"], found.group(0), text)


def test_no_template_speaks_of_reimbursement_to_the_provider():
    """The wording of every template and variant, including those no corpus card shows; the
    coder-facing rationale (`rationale`, and `about`/`title` on the rule page) may."""
    for rule, template in CATALOGUE.templates.items():
        raw = template.text
        specs = [raw] + list((raw.get("variants") or {}).values())
        for spec in specs:
            texts = [spec.get("summary", ""), spec.get("detail", "")] + list((spec.get("suggestions") or {}).values())
            if "{{ source }}" in spec.get("detail", ""):
                texts.append(raw["source"])
            for text in texts:
                found = FORBIDDEN.search(text)
                assert not found, (rule, found.group(0), text)
            assert not re.search(r"to support \**\{\{|to support \**[A-Z]\d", spec.get("detail", "")), rule


def test_the_forbidden_words_are_caught():
    for text in ("unspecified codes raise denial risk", "groups to MS-DRG 073", "prior-authorization", "payment",
                 "reimbursement", "financial impact", "not a billable code", "the cervical fusion LCDs"):
        assert FORBIDDEN.search(text), text
    for text in ("Denies trauma.", "C2 dorsal root ganglion", "displayed", "the record does not state"):
        assert not FORBIDDEN.search(text), text


# ------------------------------------------------------------------ the knowledge file
def test_queries_cover_every_documentation_element_of_the_contract():
    assert set(QUERY.elements) == set(CATALOGUE.contract["documentation_elements"])
    assert set(QUERY.order) == set(QUERY.elements)


def test_every_code_an_option_maps_to_is_billable():
    for element in QUERY.elements.values():
        for option in element.options:
            for family, code in option.codes.items():
                assert TERMINOLOGY.is_billable(code), (element.name, option.label, family, code)


def test_the_region_query_is_the_one_the_issue_asks_for():
    region = QUERY.elements["region"]
    assert [o.label for o in region.options] == ["C1-C2 / occipito-atlanto-axial", "C2-C3 or below / cervical",
                                                 OTHER, UNDETERMINED]
    assert region.options[0].codes == {"slip": "M43.11", "radiculopathy": "M54.11"}
    assert region.options[1].codes == {"slip": "M43.12", "radiculopathy": "M54.12"}


def _findings(*resources, conditions=None):
    raw = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    coded = conditions if conditions is not None else [
        CodedCondition(f"Condition/{r['id']}", tuple(_icd_codes(r)), (), None, True, True, "encounter-diagnosis",
                       None, None) for r in resources if r["resourceType"] == "Condition"]
    return SimpleNamespace(record=SimpleNamespace(raw=raw, patient_id="p1", encounter_id="e1"), conditions=coded,
                           current=lambda firm=True: coded)


def _condition(id_, code):
    return {"resourceType": "Condition", "id": id_, "code": {"coding": [{"system": ICD10CM, "code": code}]}}


CONTEXT = SimpleNamespace(terminology=TERMINOLOGY)


def _answers(card: Card) -> dict:
    return {s.values["answer"]: s for s in card.suggestions if s.key == ANSWER}


@pytest.mark.parametrize("name", list(QUERY.elements))
def test_each_element_example_is_what_the_query_does(name):
    """Every entry of queries.toml is tested by its example, run through the query step."""
    element = QUERY.elements[name]
    example = element.example
    findings = _findings(_condition("c1", example["current"]))
    card = Card(rule="SPL-DOCS", current_codes=[example["current"]],
                proposed_codes=[example["proposed"]] if example.get("proposed") else [],
                missing_documentation=[name], subject="Condition/c1")
    [query] = as_queries([card], findings, CONTEXT)
    assert query.selection_behavior == "at-most-one" and query.values["query"]["element"] == name
    answer = _answers(query)[example["answer"]]
    if example.get("sets"):
        [action] = answer.actions
        assert action.type == "update" and action.resource["id"] == "c1"
        assert _icd_codes(action.resource) == [example["sets"]]
        assert action.resource["code"]["coding"][0]["display"] == TERMINOLOGY.display(example["sets"])
    else:
        assert answer.actions == []
    assert _answers(query)[OTHER].actions == [] and _answers(query)[UNDETERMINED].actions == []


def test_the_card_asks_the_element_that_matters_most_and_lists_the_others():
    findings = _findings(_condition("c1", "M43.11"))
    card = Card(rule="SPL-DOCS", values={"current": "M43.11", "proposed_by_level": False},
                current_codes=["M43.11"], missing_documentation=["imaging", "etiology", "trauma-status"],
                subject="Condition/c1")
    [query] = as_queries([card], findings, CONTEXT)
    assert query.values["query"] == {"element": "etiology", "question": "What is the etiology of the spondylolisthesis?"}
    assert query.missing_documentation == ["imaging", "etiology", "trauma-status"]  # unchanged: the vignettes hold
    rendered = query.to_json(CATALOGUE, "https://cds.test")
    assert rendered["summary"] == "Documentation query on the spondylolisthesis: What is the etiology of the spondylolisthesis?"
    assert "The record does not state either:\n- imaging that confirms the finding at that level\n" \
           "- whether an acute traumatic mechanism is present" in rendered["detail"]
    assert "the etiology (acquired" not in rendered["detail"]
    assert [s["label"] for s in rendered["suggestions"]][-2:] == [OTHER, UNDETERMINED]
    assert contract_problems(rendered, CATALOGUE) == []


def test_an_answer_for_the_code_already_coded_or_decided_needs_no_action():
    findings = _findings(_condition("c1", "M43.10"))
    recode = Card(rule="SPL-SPECIFICITY", current_codes=["M43.10"], proposed_codes=["M43.11"], subject="Condition/c1")
    from service.cards import Suggestion
    from service.rules.common import recode_condition
    recode.suggestions = [Suggestion("recode", [recode_condition(findings, "Condition/c1", "M43.11", TERMINOLOGY)])]
    docs = Card(rule="SPL-DOCS", current_codes=["M43.10"], missing_documentation=["region"], subject="Condition/c1")
    shown = as_queries([recode, docs], findings, CONTEXT)
    assert shown[0] is recode
    answers = _answers(shown[1])
    assert answers["C1-C2 / occipito-atlanto-axial"].actions == []  # SPL-SPECIFICITY gives it M43.11
    assert _icd_codes(answers["C2-C3 or below / cervical"].actions[0].resource) == ["M43.12"]


def test_an_order_subject_gets_the_answer_as_its_reason():
    order = {"resourceType": "ServiceRequest", "id": "o1", "status": "draft",
             "reasonCode": [{"coding": [{"system": ICD10CM, "code": "M54.11"}]}]}
    findings = _findings(_condition("c1", "M54.11"), order)
    card = Card(rule="ORD-ANATOMY", values={"order": "ServiceRequest/o1", "cpt": "22551", "reasons": "M54.11"},
                current_codes=["M54.11"], missing_documentation=["region"], subject="ServiceRequest/o1")
    [query] = as_queries([card], findings, CONTEXT)
    answers = _answers(query)
    [action] = answers["C2-C3 or below / cervical"].actions
    assert action.resource["id"] == "o1" and _icd_codes(action.resource) == ["M54.12"]
    assert action.resource["reasonCode"][0]["coding"][0]["display"] == "Radiculopathy, cervical region"
    assert order["reasonCode"][0]["coding"][0]["code"] == "M54.11"  # the request is not modified
    assert answers["C1-C2 / occipito-atlanto-axial"].actions == []
    assert query.values["query"]["question"] == "At what level is the radiculopathy?"


def test_the_same_code_on_the_problem_list_and_the_encounter_is_answered_for_both():
    findings = _findings(_condition("c1", "M54.11"), _condition("c2", "M54.11"))
    card = Card(rule="RAD-GENERIC-LEVEL", values={"current": "M54.11", "wording": "upper cervical"},
                current_codes=["M54.11"], missing_documentation=["region"], subject="Condition/c1")
    [query] = as_queries([card], findings, CONTEXT)
    actions = _answers(query)["C2-C3 or below / cervical"].actions
    assert sorted(a.resource["id"] for a in actions) == ["c1", "c2"]


def test_which_cards_are_queries():
    assert NOT_ASKED == {("SPL-TRAUMA", None), ("RAD-INJURY", "undetermined")}
    assert not asks(Card(rule="RAD-INJURY", variant="undetermined", missing_documentation=["region"]))
    assert asks(Card(rule="DOC-UNCERTAIN", missing_documentation=["diagnosis-certainty"]))
    assert asks(Card(rule="SPL-TRAUMA", variant="undetermined", missing_documentation=["fracture-detail"]))
    assert not asks(Card(rule="SPL-TRAUMA", missing_documentation=["fracture-detail"]))
    assert not asks(Card(rule="SPL-SPECIFICITY"))
    card = Card(rule="SPL-SPECIFICITY", current_codes=["M43.10"])
    assert as_queries([card], _findings(_condition("c1", "M43.10")), CONTEXT) == [card]


# ------------------------------------------------------------------ schema errors at load
def _data() -> dict:
    with open(QUERIES, "rb") as fh:
        return tomllib.load(fh)


def _break(mutate):
    data = copy.deepcopy(_data())
    mutate(data)
    return data


def _option(data, element, label):
    return next(o for o in data["elements"][element]["options"] if o["label"] == label)


SCHEMA_ERRORS = {
    "unknown top key": (lambda d: d.update(extra=1), r"top level: unknown keys \['extra'\]"),
    "order misses an element": (lambda d: d["order"].remove("imaging"), r"order: must name every element once"),
    "order repeats an element": (lambda d: d["order"].append("region"), r"order: names an element twice"),
    "family without prefixes": (lambda d: d["families"]["slip"].update(prefixes=[]),
                                r"\[families.slip\]: `prefixes` must be a list of codes"),
    "element without a question": (lambda d: d["elements"]["imaging"].pop("question"),
                                   r"\[elements.imaging\]: missing keys \['question'\]"),
    "question with an unknown field": (lambda d: d["elements"]["region"].update(question="Which {level}?"),
                                       r"\[elements.region\]: a question may name only \{condition\}"),
    "element family unknown": (lambda d: d["elements"]["region"].update(families=["slip", "disc"]),
                               r"\[elements.region\]: `families` names unknown families \['disc'\]"),
    "no 'other'": (lambda d: d["elements"]["imaging"]["options"].remove(_option(d, "imaging", OTHER)),
                   r"\[elements.imaging\]: needs the option 'other'"),
    "no 'clinically undetermined'": (
        lambda d: d["elements"]["region"]["options"].remove(_option(d, "region", UNDETERMINED)),
        r"\[elements.region\]: needs the option 'clinically undetermined'"),
    "'other' with a code": (lambda d: _option(d, "region", OTHER).update(codes={"slip": "M43.10"}),
                            r"'other' maps to no code"),
    "code for a family the element lacks": (
        lambda d: _option(d, "etiology", "congenital or developmental").update(codes={"radiculopathy": "M54.10"}),
        r"\[elements.etiology\] option 2: `codes` names families \['radiculopathy'\]"),
    "keeps and codes": (lambda d: _option(d, "etiology", "congenital or developmental").update(keeps=True),
                        r"either keeps the code already coded or maps to codes"),
    "unknown option key": (lambda d: _option(d, "region", OTHER).update(recommended=True),
                           r"option 3: unknown keys \['recommended'\]"),
    "duplicate labels": (lambda d: d["elements"]["imaging"]["options"].append({"label": OTHER}),
                         r"option labels must be distinct"),
    "example answer not offered": (lambda d: d["elements"]["region"]["example"].update(answer="thoracic"),
                                   r"\[elements.region\] example: 'thoracic' is not an option offered"),
    "example sets the wrong code": (lambda d: d["elements"]["region"]["example"].update(sets="M54.13"),
                                    r"for M54.11 sets M54.12, not M54.13"),
    "example without its answer": (lambda d: d["elements"]["imaging"]["example"].pop("answer"),
                                   r"\[elements.imaging\] example: `answer` must be a non-empty string"),
}


@pytest.mark.parametrize("name", list(SCHEMA_ERRORS))
def test_schema_errors_are_refused_at_load(name):
    mutate, message = SCHEMA_ERRORS[name]
    with pytest.raises(QueryError, match=message):
        parse_queries(_break(mutate))


def test_the_file_loads_and_a_broken_file_is_refused(tmp_path):
    assert load_queries().order == QUERY.order
    bad = tmp_path / "queries.toml"
    bad.write_text("order = [\n")
    with pytest.raises(QueryError, match="not TOML"):
        load_queries(bad)
    assert issubclass(QueryError, ValueError)
    assert (ROOT / "service" / "knowledge" / "queries.toml") == QUERIES

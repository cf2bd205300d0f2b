"""Missing documentation asked as compliant queries: the last step of `evaluate()`, after `resolve()`.

A card that names missing documentation is shown to the provider as a documentation query, the
way compliant query practice asks (AHIMA/ACDIS, "Guidelines for Achieving a Compliant Query
Practice", 2022 update; the card contract, "Queries"):

- its detail quotes the clinical indicators found in the record (the card's evidence) and asks
  **one** neutral question: that of the missing element that matters most (the `order` of
  `knowledge/queries.toml`); the other missing elements are listed as what else the record does
  not state;
- its suggestions are the answers (`selectionBehavior` at-most-one, none recommended): the
  clinically reasonable options of that element plus "other" and "clinically undetermined";
- an answer that maps to a code (for the family of the subject's code: the region answers are
  M43.11 / M43.12 for a slip, M54.11 / M54.12 for a radiculopathy) carries the FHIR action that
  sets exactly that code on the card's subject (the Condition, or the reason of the draft order);
  an answer that maps to no code, or to the code the subject already carries (or is given by
  another card shown), carries no action: the current code stands, and the feedback records the
  choice.

The questions and answers are data a coding specialist reviews (`knowledge/queries.toml`); the
wording around them is the rule's template (`cards/<RULE>.toml`, the question rendered by
`cards/_missing.md`). A card keeps its `proposedCodes` and `missingDocumentation`.

Which cards are queries (every card with missing documentation, except those named below):

- **SPL-DOCS, RAD-DOCS, RAD-GENERIC-LEVEL, ORD-FUSION-DOCS** (kind missing-documentation): what
  the code or the order rests on is not in the record; only the provider can say it.
- **ORD-ANATOMY**: a procedure defined below C2 whose only reason is a C0-C2 diagnosis. Which is
  right is a clinical fact (the level of the condition treated), so the card asks the level; the
  answer "C2-C3 or below" gives the order the cervical code, "C1-C2" keeps it (and leaves the
  procedure to be reviewed).
- **SPL-GENERIC-LEVEL** (asks while proposing): "cervical" or "upper cervical" alone does not say
  whether the slip is at C0-C2; the proposal (M43.12) is kept as the action of the answer
  "C2-C3 or below / cervical", so the card proposes what it did and no longer leads to it.
- **RAD-CERVICALGIA** (asks while proposing): whether the neck pain is radicular is the
  provider's finding; the proposal (M54.2) is the action of the answer "neck pain without
  radicular signs or symptoms".
- **DOC-UNCERTAIN** (outpatient, Section IV.H): a diagnosis documented as probable or likely;
  the card asks whether it is established, remains uncertain or was ruled out. No answer sets a
  code: the coder codes the documentation that follows.
- **SPL-TRAUMA, variant undetermined**: the acute injury is documented but its type or
  displacement is not, so no billable code can be chosen; the card asks for the detail. Its
  answers set no code (the S12 code also needs its 7th character; the coder completes it), and
  the card still proposes only the category.

Not queries:

- **SPL-TRAUMA with a code** (`NOT_ASKED`): the tabular's own defaults (displaced, closed) give a
  billable injury code, and M43.1- is excluded whatever the detail; the card is a reroute that
  names "fracture-detail" only because a more specific code could exist. It says what the record
  does not state, but asks nothing: a query there would hold a critical correction hostage to an
  optional refinement.
- **RAD-INJURY, variant undetermined**: the radiculopathy is a current injury, but the injured
  root's region is not documented; the region query's answers map to radiculopathy codes (M54.1-),
  which the injury excludes, so the card lists what is missing and asks nothing.
- **TAB-HEADER** (no-child, invalid): names no missing documentation; the code as entered is not
  a code that can be reported, which is a coding correction, not a question for the provider.
"""
from __future__ import annotations

import copy
import dataclasses

from ..cards import Action, Card, Suggestion
from ..knowledge import Element, Queries, queries
from ..terminology import ICD10CM
from .common import coding, recode_condition

# (rule, variant) of cards that name missing documentation but are not asked as queries (above).
NOT_ASKED = frozenset({("SPL-TRAUMA", None), ("RAD-INJURY", "undetermined")})
ANSWER = "answer"  # the suggestion key of an answer: its label template in cards/<RULE>.toml [suggestions]


def asks(card: Card) -> bool:
    """The card is shown as a documentation query."""
    return bool(card.missing_documentation) and (card.rule, card.variant) not in NOT_ASKED


def as_queries(cards, findings, context) -> list[Card]:
    """The cards to show, each missing-documentation card made a query (the others as they are)."""
    cards = list(cards)
    catalogue = queries()
    decided = _decided_changes(cards)
    return [_as_query(card, findings, context, catalogue, decided) if asks(card) else card for card in cards]


def _as_query(card: Card, findings, context, catalogue: Queries, decided: dict[str, str]) -> Card:
    element = catalogue.element_to_ask(card.missing_documentation)
    if element is None:
        return card
    family = catalogue.family_of_card(element, list(card.proposed_codes) + list(card.current_codes))
    targets = _targets(card, findings, decided)
    suggestions = []
    for option in element.options_for(family):
        actions = []
        if option.codes:
            for reference in targets:
                actions.extend(_set(findings, context, catalogue, element, reference, option.codes, decided))
        suggestions.append(Suggestion(ANSWER, actions, {"answer": option.label}))
    proposed = {code for code in card.proposed_codes if context.terminology.is_billable(code)}
    answered = {_icd_of(a.resource) for s in suggestions for a in s.actions}
    if not proposed <= answered:
        return card  # an answer must carry the card's proposal (queries.toml and the rule disagree)
    query = {"element": element.name, "question": catalogue.question(element, family)}
    return dataclasses.replace(card, values={**card.values, "query": query}, suggestions=suggestions,
                               selection_behavior="at-most-one")


# ----------------------------------------------------------------- the subject
def _reference(resource: dict | None) -> str | None:
    if not resource or not resource.get("resourceType") or not resource.get("id"):
        return None
    return f"{resource['resourceType']}/{resource['id']}"


def _icd_of(resource: dict | None) -> str | None:
    """The ICD-10-CM code a Condition carries, or the first ICD-10-CM reason of a ServiceRequest."""
    if not resource:
        return None
    concepts = [resource.get("code")] if resource.get("resourceType") == "Condition" else resource.get("reasonCode")
    for concept in concepts or []:
        for c in (concept or {}).get("coding") or []:
            if c.get("system") == ICD10CM and c.get("code"):
                return c["code"]
    return None


def _decided_changes(cards: list[Card]) -> dict[str, str]:
    """The code each resource is given by a card shown that is not a query (one code, no choice):
    an answer that maps to that code needs no action."""
    decided: dict[str, str] = {}
    ambiguous: set[str] = set()
    for card in cards:
        if asks(card):
            continue
        for suggestion in card.suggestions:
            for action in suggestion.actions:
                reference = _reference(action.resource) if action.type == "update" else None
                code = _icd_of(action.resource) if reference and reference.startswith("Condition/") else None
                if not code:
                    continue
                if decided.setdefault(reference, code) != code:
                    ambiguous.add(reference)
    return {r: c for r, c in decided.items() if r not in ambiguous}


def _standing(findings, reference: str, decided: dict[str, str]) -> str | None:
    if reference in decided:
        return decided[reference]
    return next((c.code for c in findings.conditions if c.reference == reference), None) \
        or _icd_of(findings.record.raw.get(reference))


def _targets(card: Card, findings, decided: dict[str, str]) -> list[str]:
    """What the answers change: the card's subject (else the draft order it names, else a current
    Condition coded with its code), the resources its own actions change (a card the resolver
    merged for the same code on the problem list and the encounter), and the other current
    Conditions that carry the same code (one diagnosis, recorded twice)."""
    raw = findings.record.raw
    targets: list[str] = []

    def add(reference):
        if reference and reference in raw and reference not in targets:
            targets.append(reference)

    add(card.subject)
    for suggestion in card.suggestions:
        for action in suggestion.actions:
            if action.type == "update":
                add(_reference(action.resource))
    if not targets:
        order = card.values.get("order")
        if isinstance(order, str) and order.startswith("ServiceRequest/"):
            add(order)
    current = findings.current(firm=False)
    if not targets:
        add(next((c.reference for code in card.current_codes for c in current if c.code == code), None))
    codes = {_standing(findings, r, decided) for r in targets if r.startswith("Condition/")}
    for condition in current:
        if condition.code in codes and _standing(findings, condition.reference, decided) == condition.code:
            add(condition.reference)
    return targets


# ----------------------------------------------------------------- the actions
def _set(findings, context, catalogue: Queries, element: Element, reference: str, codes: dict,
         decided: dict[str, str]) -> list[Action]:
    """The actions that give `reference` the code an answer means for its family (none when it
    already carries it)."""
    terminology = context.terminology
    if reference.startswith("Condition/"):
        standing = _standing(findings, reference, decided)
        target = codes.get(catalogue.family_of(standing, element.families))
        if not target or target == standing:
            return []
        return [recode_condition(findings, reference, target, terminology)]
    if not reference.startswith("ServiceRequest/"):
        return []
    resource = copy.deepcopy(findings.record.raw[reference])
    changed = []
    for concept in resource.get("reasonCode") or []:
        for n, c in enumerate(concept.get("coding") or []):
            if c.get("system") != ICD10CM or not c.get("code"):
                continue
            target = codes.get(catalogue.family_of(c["code"], element.families))
            if target and target != c["code"]:
                concept["coding"][n] = coding(target, terminology)
                concept["text"] = terminology.display(target)
                changed.append(target)
    actions = []
    if changed:
        actions.append(Action("update", f"Give {reference} the reason {', '.join(changed)} "
                                        f"{', '.join(terminology.display(c) for c in changed)}", resource))
    for ref in resource.get("reasonReference") or []:
        condition = (ref or {}).get("reference")
        if condition and condition.startswith("Condition/") and condition in findings.record.raw:
            actions.extend(_set(findings, context, catalogue, element, condition, codes, decided))
    return actions

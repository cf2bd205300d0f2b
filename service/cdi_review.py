"""The view of a service that shows part of what the rules conclude: the CDI review at patient-view.

`spine-coding-cdi-review` (services.CDI_REVIEW, opt-in: SPINE_CDS_CDI_REVIEW) runs the record-wide
rules of encounter-sign on the chart a documentation specialist opens, and shows (its
`services.CardView`):

- **which cards**: those of the kinds `missing-documentation` (documentation queries) and
  `specificity` (a more specific code the documentation supports), after the one arbitration over
  every candidate (`rules.evaluate`, `RuleContext.shows`): a card the view leaves out still decides
  what the others say, so a specificity card that a critical reroute overrules, or a query made moot
  by it, is not shown either, and nothing shown contradicts what encounter-sign would say. Left out:
  `reroute`, `excludes1-conflict`, `sequencing`, `additional-code`, `medical-necessity` (the order
  rules do not run at patient-view);
- **how**: every card `info` (the card contract gives specificity cards `warning`; a CDI review is
  a worklist, never an interruption), its wording, suggestions and payload as its rule gives them;
- **about which encounter** (`current_encounter`): `context.encounterId` when given; else the
  patient's encounter the prefetch (or the FHIR server) gives as in progress, else the latest
  finished one; else, when none can be told (no Encounter, or two equally recent), the whole record.
  The chosen encounter is the call's as if the context had named it: the date the code set is
  checked for, the diagnoses' ranks, the suppression window, and the notes of other encounters
  read as prior (evidence_policy.py).
"""
from __future__ import annotations

from .code_set import day_range

IN_PROGRESS, FINISHED = "in-progress", "finished"


def kind_of(card, catalogue) -> str:
    """The card contract kind of a rule's card (its template's, or its variant's)."""
    template = catalogue.templates[card.rule]
    variant = (template.variants.get(card.variant) or {}) if card.variant else {}
    return variant.get("kind", template.kind)


def shows(view, catalogue):
    """The predicate `RuleContext.shows` for a view: the card is of one of its kinds."""
    return lambda card: kind_of(card, catalogue) in view.kinds


def reindicate(cards: list[dict], view) -> None:
    """Every card JSON of the view with the view's indicator."""
    for card in cards:
        card["indicator"] = view.indicator


def current_encounter(record, view) -> None:
    """Make the record's encounter the current one (above), in place, before the findings are read."""
    from .record import _parse  # the parse cache holds the model already: the Encounter parsed in the record

    key = view.encounter_search
    if record.encounter_id:
        # The context names it: the patient's other encounters are not needed (nor their absence said).
        if key:
            record.unavailable.pop(key, None)
        reference = f"Encounter/{record.encounter_id}"
        raw = record.raw.get(reference)
        record.encounter = _parse(record, raw, reference) if raw is not None else None
        return
    encounters = [(reference, raw) for reference, raw in record.raw.items()
                  if raw.get("resourceType") == "Encounter" and isinstance(raw.get("id"), str)]
    chosen = (_latest([e for e in encounters if e[1].get("status") == IN_PROGRESS])
              if any(e[1].get("status") == IN_PROGRESS for e in encounters)
              else _latest([e for e in encounters if e[1].get("status") == FINISHED]))
    if chosen is None:
        record.encounter = None  # the whole record: no encounter is the current one
        return
    reference, raw = chosen
    record.encounter_id = raw["id"]
    record.encounter = _parse(record, raw, reference)


def _latest(encounters: list[tuple[str, dict]]) -> tuple[str, dict] | None:
    """The one encounter that started last (by day), or None: none, or the latest day shared or unknown."""
    if len(encounters) == 1:
        return encounters[0]
    dated = []
    for reference, raw in encounters:
        period = raw.get("period")
        days = day_range(period.get("start")) if isinstance(period, dict) else None
        if days is None:
            return None  # one of them cannot be placed: which is the latest cannot be told
        dated.append((days[0], reference, raw))
    if not dated:
        return None
    dated.sort(key=lambda d: d[0], reverse=True)
    if len(dated) > 1 and dated[0][0] == dated[1][0]:
        return None
    return dated[0][1], dated[0][2]

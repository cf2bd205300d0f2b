"""The loaded ICD-10-CM release and a hook call's date: which codes a card may set, and what it says.

A release is valid for a period (`terminology.Release`; the packaged April 1 2026 release: 2026-04-01
to 2026-09-30). A hook call is dated by its Encounter's `period.start` as written (a partial date is
the days it may mean), else today (the server's local date) when there is no encounter or it has no
start. Two rules, applied to every hook answer (`pipeline.answer_hook`):

1. **Only codes of the loaded release.** A candidate card that names a code the release does not
   have, or whose actions would set a code that is not billable in it, takes no part in the
   arbitration (the rules' tables name codes of the release they were written for: a release that
   deleted M43.11 gets no card proposing it). An answer whose action sets such a code (a query's
   answer) loses that action.
2. **Dated outside the period**, the answer still comes, with what the rules conclude, but no
   suggestion sets a code: a suggestion that would give a Condition or an order a code it does not
   have is withheld (a query's answer keeps its place, without the action), every card says why in
   its detail (cards/_code_set.md) and carries `codeSet` in its extension, and so does the answer
   (`extension.spine-coding-cds.codeSet`). Deletions (an Excludes1 choice between codes on the
   record), sequencing and documentation queries are unchanged. A period that is not known covers
   no date.
"""
from __future__ import annotations

import calendar
import dataclasses
import logging
import re
import threading
from dataclasses import dataclass
from datetime import date

from .terminology import ICD10CM

log = logging.getLogger(__name__)

SUMMARY_RULE = "RESOLVE-MORE"  # the card that names the cards not shown: it sets nothing, says nothing of codes
_PARTIAL = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def today() -> date:
    """The date of a hook call without an encounter date: the server's local date."""
    return date.today()


def day_range(value) -> tuple[date, date] | None:
    """A FHIR date or dateTime as the days it may mean, read as written (its own time zone):
    '2026-11-20T09:00:00-05:00' → that day; '2026-11' → November 2026; '2026' → the year."""
    if not isinstance(value, str):
        return None
    match = _PARTIAL.match(value.strip())
    if not match:
        return None
    try:
        year = int(match.group(1))
        if match.group(3):
            day = date(year, int(match.group(2)), int(match.group(3)))
            return day, day
        if match.group(2):
            month = int(match.group(2))
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        return date(year, 1, 1), date(year, 12, 31)
    except ValueError:
        return None


@dataclass(frozen=True)
class Dated:
    """A hook call's date against the loaded release."""

    release: object  # terminology.Release
    first: date
    last: date
    source: str  # "encounter" | "today"
    covered: bool

    @property
    def written(self) -> str:
        if self.first == self.last:
            return self.first.isoformat()
        if self.first.month == 1 and self.last.month == 12 and self.first.day == 1 and self.last.day == 31:
            return str(self.first.year)
        return self.first.isoformat()[:7]

    def to_json(self, withheld: int, note: str) -> dict:
        release = self.release
        return {"release": release.title, "effective": release.period.to_json() if release.period else "unknown",
                "date": self.written, "dateFrom": self.source, "covered": self.covered,
                "withheldSuggestions": withheld, "note": note}


def encounter_day(record) -> tuple[date, date] | None:
    """The days of the Encounter's period.start (the context's encounter first), as the EHR sent it."""
    references = []
    if record.encounter_id:
        references.append(f"Encounter/{record.encounter_id}")
    if record.encounter is not None and getattr(record.encounter, "id", None):
        references.append(f"Encounter/{record.encounter.id}")
    for reference in references:
        resource = record.raw.get(reference)
        if isinstance(resource, dict):
            period = resource.get("period")
            days = day_range(period.get("start")) if isinstance(period, dict) else None
            if days:
                return days
    return None


def date_call(release, record, as_of: date | None = None) -> Dated:
    """The call's date against the release: `as_of` when given (the rule pages' worked examples),
    else the encounter's start, else today."""
    if as_of is not None:
        first = last = as_of
        source = "as-of"
    elif (days := encounter_day(record)) is not None:
        (first, last), source = days, "encounter"
    else:
        first = last = today()
        source = "today"
    covered = release.period is not None and release.period.covers(first, last)
    return Dated(release, first, last, source, covered)


# ------------------------------------------------------------------ codes set by a card
def _icd(concepts) -> set[str]:
    out = set()
    for concept in concepts or []:
        if not isinstance(concept, dict):
            continue
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and coding.get("system") == ICD10CM and isinstance(coding.get("code"), str):
                out.add(coding["code"])
    return out


def _codes_of(resource) -> set[str]:
    if not isinstance(resource, dict):
        return set()
    kind = resource.get("resourceType")
    if kind == "Condition":
        return _icd([resource.get("code")])
    if kind == "ServiceRequest":
        return _icd(resource.get("reasonCode"))
    return set()


def codes_set_by(action, record) -> set[str]:
    """The ICD-10-CM codes an action would give a resource that it does not have now: every code of
    a Condition it creates; the new codes of a Condition or order it updates (a reason kept beside
    the new one is not set by it). Deletions and Encounter updates (sequencing) set none."""
    if action.type not in ("create", "update") or not isinstance(action.resource, dict):
        return set()
    codes = _codes_of(action.resource)
    if action.type == "update" and codes:
        resource = action.resource
        codes -= _codes_of(record.raw.get(f"{resource.get('resourceType')}/{resource.get('id')}"))
    return codes


def codes_set_by_card(card, record) -> set[str]:
    return {code for s in card.suggestions for a in s.actions for code in codes_set_by(a, record)}


# ------------------------------------------------------------------ 1. only codes of the release
_LOGGED: set[tuple[str, str]] = set()
_LOGGED_LOCK = threading.Lock()


def _note_unknown(rule: str, code: str) -> None:
    with _LOGGED_LOCK:
        if (rule, code) in _LOGGED or len(_LOGGED) > 1000:
            return
        _LOGGED.add((rule, code))
    log.warning("the loaded ICD-10-CM release has no billable %s: %s cards proposing it are not shown "
                "(logged once)", code, rule)


def of_the_release(candidates: list, terminology, record) -> list:
    """The candidates whose codes the loaded release has: the codes they name exist in it and the codes
    their actions set are billable leaves of it."""
    kept = []
    for card in candidates:
        unknown = [c for c in card.proposed_codes if not terminology.exists(c)]
        unknown += [c for c in sorted(codes_set_by_card(card, record)) if not terminology.is_billable(c)]
        if unknown:
            _note_unknown(card.rule, unknown[0])
        else:
            kept.append(card)
    return kept


def table_codes_missing(terminology) -> list[str]:
    """The codes of the code tables (knowledge/code_tables.toml) the loaded release lacks: those the
    rules propose that it cannot bill, and those they name (categories whose codes they recognise,
    such as M05) that it does not have. Empty for the packaged release (tests/test_code_tables.py)."""
    from .rules.tables import TABLES

    proposed = {*TABLES.order_reasons.values(), *TABLES.disc_by_level.values(), TABLES.disc_unleveled,
                TABLES.disc_cervicothoracic, *(a.proposed for a in TABLES.causes + TABLES.neuro),
                *(c for codes in TABLES.ra_options.values() for c in codes)}
    proposed |= {f"M43.1{digit}" for digit in TABLES.region_digit.values()}
    proposed |= {f"M54.1{digit}" for region, digit in TABLES.region_digit.items() if region != "multiple"}
    missing = {code for code in proposed if not terminology.is_billable(code)}
    missing |= {code for _, code in TABLES.all_codes() if code not in proposed and not terminology.exists(code)}
    return sorted(missing)


# ------------------------------------------------------------------ 2. outside the period
@dataclass
class Withheld:
    """What the date changed in the answer: per card uuid, the codes it may not set."""

    cards: dict = dataclasses.field(default_factory=dict)  # card uuid → the codes it names, to verify
    suggestions: int = 0  # suggestions withheld or left without their action


def vouch(cards: list, record, terminology, dated: Dated) -> tuple[list, Withheld]:
    """The cards as the answer shows them: no action sets a code the release cannot bill, and, dated
    outside the period, none sets a code at all. A suggestion that sets a code is withheld whole,
    except a query's answers and the options of a card that asks (a suggestion without
    `is_recommended`, beside "other"), which keep their place without the action."""
    withheld = Withheld()
    out = []
    for card in cards:
        if card.rule == SUMMARY_RULE:
            out.append(card)
            continue
        asks = "query" in card.values or any(not s.actions for s in card.suggestions)
        suggestions, codes = [], set()
        for suggestion in card.suggestions:
            actions, dropped = [], set()
            for action in suggestion.actions:
                setting = codes_set_by(action, record)
                if setting and (not dated.covered or not all(terminology.is_billable(c) for c in setting)):
                    dropped |= setting
                else:
                    actions.append(action)
            if not dropped:
                suggestions.append(suggestion)
                continue
            codes |= dropped
            withheld.suggestions += 1
            if asks:
                suggestions.append(dataclasses.replace(suggestion, actions=actions))
        if not dated.covered:
            withheld.cards[card.uuid] = sorted(codes | set(card.proposed_codes))
        out.append(dataclasses.replace(card, suggestions=suggestions) if codes else card)
    return out, withheld

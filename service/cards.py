"""Step 5 of a hook call: cards, built to CDS Hooks 2.0 and to this product's card contract.

A rule returns `Card` objects; `Card.to_json` adds what every card carries (uuids, source with
topic, override reasons, the `spine-coding-cds` extension) and omits empty optional fields, as
the spec requires (no null, "", [] or {}). `contract_problems` checks a card as an EHR would.
"""
from __future__ import annotations

import tomllib
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .config import PROJECT_DIR

CARDS_DIR = PROJECT_DIR / "cards"
INDICATORS = ("info", "warning", "critical")
ASSERTIONS = ("affirmed", "negated", "uncertain", "historical")
SELECTION_BEHAVIORS = ("at-most-one", "any")


class CardCatalogue:
    """The reviewable card vocabulary in `cards/contract.toml`, loaded once."""

    def __init__(self, directory: Path = CARDS_DIR):
        self.directory = Path(directory)
        with open(self.directory / "contract.toml", "rb") as fh:
            self.contract = tomllib.load(fh)

    @cached_property
    def kinds(self) -> dict:
        return self.contract["kinds"]

    @property
    def product(self) -> str:
        return self.contract["product"]

    def override_reasons(self) -> list[dict]:
        system = self.contract["override_reason_system"]
        return [{"code": code, "system": system, "display": display}
                for code, display in self.contract["override_reasons"].items()]

    def topic(self, kind: str) -> dict:
        return {"system": self.contract["kind_system"], "code": kind, "display": self.kinds[kind]["display"]}


@dataclass(frozen=True)
class Evidence:
    reference: str
    element: str
    text: str
    assertion: str = "affirmed"

    def to_json(self) -> dict:
        return {"reference": self.reference, "element": self.element, "text": self.text,
                "assertion": self.assertion}


@dataclass
class Action:
    type: str  # create | update | delete
    description: str
    resource: dict | None = None
    resource_id: str | None = None

    def to_json(self) -> dict:
        out = {"type": self.type, "description": self.description}
        if self.resource:
            out["resource"] = self.resource
        if self.resource_id:
            out["resourceId"] = self.resource_id
        return out


@dataclass
class Suggestion:
    label: str
    actions: list[Action] = field(default_factory=list)
    is_recommended: bool | None = None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self) -> dict:
        out = {"label": self.label, "uuid": self.uuid}
        if self.is_recommended is not None:
            out["isRecommended"] = self.is_recommended
        if self.actions:
            out["actions"] = [a.to_json() for a in self.actions]
        return out


@dataclass
class Card:
    rule: str
    kind: str
    summary: str
    indicator: str | None = None  # None → the kind's default indicator
    detail: str | None = None
    current_codes: list[str] = field(default_factory=list)
    proposed_codes: list[str] = field(default_factory=list)
    missing_documentation: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    selection_behavior: str | None = None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self, catalogue: CardCatalogue, rules_base_url: str) -> dict:
        indicator = self.indicator or catalogue.kinds[self.kind]["indicator"]
        out = {
            "uuid": self.uuid,
            "summary": self.summary,
            "indicator": indicator,
            "source": {
                "label": catalogue.product,
                "url": f"{rules_base_url.rstrip('/')}/rules/{self.rule}",
                "topic": catalogue.topic(self.kind),
            },
        }
        if self.detail:
            out["detail"] = self.detail
        if self.suggestions:
            out["suggestions"] = [s.to_json() for s in self.suggestions]
            out["selectionBehavior"] = self.selection_behavior or "at-most-one"
        out["overrideReasons"] = catalogue.override_reasons()
        payload = {"rule": self.rule, "currentCodes": list(self.current_codes),
                   "proposedCodes": list(self.proposed_codes)}
        if self.missing_documentation:
            payload["missingDocumentation"] = list(self.missing_documentation)
        payload["evidence"] = [e.to_json() for e in self.evidence]
        out["extension"] = {catalogue.contract["extension_key"]: payload}
        return out


def contract_problems(card: dict, catalogue: CardCatalogue) -> list[str]:
    """Every way a card JSON breaks CDS Hooks 2.0 or the card contract (empty list = conforms)."""
    problems = []

    def empty(value) -> bool:
        return value is None or value == "" or value == [] or value == {}

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                # The extension payload's arrays are part of the contract and may be empty.
                if empty(v) and not path.startswith("extension"):
                    problems.append(f"{path}.{k} is empty (omit optional fields instead)")
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(value, list):
            for n, v in enumerate(value):
                walk(v, f"{path}[{n}]")

    walk(card, "")
    if not _is_uuid(card.get("uuid")):
        problems.append("uuid missing or not a UUID")
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) >= 140:
        problems.append("summary must be a non-empty string under 140 characters")
    if card.get("indicator") not in INDICATORS:
        problems.append("indicator must be info, warning or critical")
    source = card.get("source") or {}
    if not source.get("label"):
        problems.append("source.label missing")
    if not str(source.get("url", "")).startswith(("http://", "https://")):
        problems.append("source.url must be an absolute URL")
    topic = source.get("topic") or {}
    if topic.get("system") != catalogue.contract["kind_system"] or topic.get("code") not in catalogue.kinds:
        problems.append("source.topic must be a card kind of the contract")
    suggestions = card.get("suggestions")
    if suggestions:
        if card.get("selectionBehavior") not in SELECTION_BEHAVIORS:
            problems.append("selectionBehavior required with suggestions")
        for n, s in enumerate(suggestions):
            if not s.get("label") or not _is_uuid(s.get("uuid")):
                problems.append(f"suggestions[{n}] needs a label and a uuid")
            for m, a in enumerate(s.get("actions") or []):
                if a.get("type") not in ("create", "update", "delete") or not a.get("description"):
                    problems.append(f"suggestions[{n}].actions[{m}] needs a type and a description")
                if a.get("type") in ("create", "update") and not isinstance(a.get("resource"), dict):
                    problems.append(f"suggestions[{n}].actions[{m}] needs the whole resource")
    for n, reason in enumerate(card.get("overrideReasons") or []):
        if not (reason.get("code") and reason.get("system") and reason.get("display")):
            problems.append(f"overrideReasons[{n}] needs code, system and display")
    payload = (card.get("extension") or {}).get(catalogue.contract["extension_key"])
    if not isinstance(payload, dict):
        problems.append("extension.spine-coding-cds missing")
    else:
        if not payload.get("rule"):
            problems.append("extension rule missing")
        for key in ("currentCodes", "proposedCodes", "evidence"):
            if not isinstance(payload.get(key), list):
                problems.append(f"extension {key} must be an array")
        elements = catalogue.contract["documentation_elements"]
        for element in payload.get("missingDocumentation") or []:
            if element not in elements:
                problems.append(f"missingDocumentation element {element!r} is not in the contract")
        if topic.get("code") == "missing-documentation" and not payload.get("missingDocumentation"):
            problems.append("a missing-documentation card must name the missing elements")
        for n, ev in enumerate(payload.get("evidence") or []):
            if not (ev.get("reference") and ev.get("element") and ev.get("text")) \
                    or ev.get("assertion") not in ASSERTIONS:
                problems.append(f"evidence[{n}] needs reference, element, text and an assertion")
    return problems


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
        return isinstance(value, str)
    except ValueError:
        return False

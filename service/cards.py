"""Step 5 of a hook call: cards, built to CDS Hooks 2.0 and to this product's card contract.

A rule returns `Card` objects; `Card.to_json` adds what every card carries (uuids, source with
topic, override reasons, the `spine-coding-cds` extension) and omits empty optional fields, as
the spec requires (no null, "", [] or {}). `contract_problems` checks a card as an EHR would: its
structure by the card model of service/wire.py, the contract's vocabulary here.

Chart text is data, never markup: every value a template prints (`{{ ... }}`: codes, displays,
dates, ids, levels, quotes, suggestion values) is escaped by `escaping.markdown` as it is printed
(the Jinja environment's `finalize`), so a template cannot forget it; only the templates' own
wording is markdown. The product's own values (the rule's source, documentation labels) are
marked `escaping.Markdown` and printed as they are.
"""
from __future__ import annotations

import tomllib
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import get_args

import jinja2

from . import escaping, wire
from .config import PROJECT_DIR
from .findings import Evidence

CARDS_DIR = PROJECT_DIR / "cards"
INDICATORS = get_args(wire.Card.model_fields["indicator"].annotation)  # the card model's: info, warning, critical


class TemplateError(ValueError):
    """A card template in cards/ that does not follow its schema: refused at load."""


_TEMPLATE_KEYS = {"title", "kind", "indicator", "source", "about", "rationale", "summary", "detail", "suggestions", "variants"}
_VARIANT_KEYS = {"kind", "indicator", "summary", "detail", "suggestions"}


@dataclass(frozen=True)
class RuleTemplate:
    """The wording of one rule's cards (cards/<RULE-ID>.toml), compiled once."""

    rule: str
    title: str
    about: str
    source: str
    kind: str
    indicator: str
    summary: object  # jinja2.Template
    detail: object
    suggestions: dict
    variants: dict
    text: dict  # the raw TOML, for the rule's page


class CardCatalogue:
    """The reviewable card vocabulary (cards/contract.toml) and every rule's wording, loaded once."""

    def __init__(self, directory: Path = CARDS_DIR):
        self.directory = Path(directory)
        with open(self.directory / "contract.toml", "rb") as fh:
            self.contract = tomllib.load(fh)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.directory)), undefined=jinja2.StrictUndefined,
            autoescape=False, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True,
            finalize=escaping.markdown,  # every printed value escaped: chart text is data, never markup
        )
        self.env.filters["md"] = escape_markdown  # kept for templates that say so; finalize does it anyway
        self.notes = {}
        for name, text in (self.contract.get("notes") or {}).items():
            if not isinstance(text, str) or not text.strip():
                raise TemplateError(f"cards/contract.toml: [notes] {name} must be a markdown text")
            try:
                self.notes[name] = self.env.from_string(text)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"cards/contract.toml: note {name} line {exc.lineno}: {exc.message}") from None
        self.templates: dict[str, RuleTemplate] = {}
        for path in sorted(self.directory.glob("*.toml")):
            if path.name != "contract.toml":
                self.templates[path.stem] = self._load(path)

    def _load(self, path: Path) -> RuleTemplate:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        where = f"cards/{path.name}"
        unknown = set(raw) - _TEMPLATE_KEYS
        if unknown:
            raise TemplateError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("title", "kind", "indicator", "source", "about", "summary", "detail"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise TemplateError(f"{where}: `{key}` is required")
        variants = {}
        for name, variant in (raw.get("variants") or {}).items():
            if set(variant) - _VARIANT_KEYS:
                raise TemplateError(f"{where}: variant {name} has unknown keys {sorted(set(variant) - _VARIANT_KEYS)}")
            variants[name] = variant
        for spec in [raw] + list(variants.values()):
            if spec.get("kind", raw["kind"]) not in self.kinds:
                raise TemplateError(f"{where}: kind {spec.get('kind')!r} is not a kind of the contract")
            if spec.get("indicator", raw["indicator"]) not in INDICATORS:
                raise TemplateError(f"{where}: indicator must be one of {INDICATORS}")
        try:
            compile_ = self.env.from_string
            return RuleTemplate(
                rule=path.stem, title=raw["title"], about=raw["about"], source=raw["source"],
                kind=raw["kind"], indicator=raw["indicator"],
                summary=compile_(raw["summary"]), detail=compile_(raw["detail"]),
                suggestions={k: compile_(v) for k, v in (raw.get("suggestions") or {}).items()},
                variants={name: {k: (compile_(v) if k in ("summary", "detail") else
                                     {sk: compile_(sv) for sk, sv in v.items()} if k == "suggestions" else v)
                                 for k, v in variant.items()} for name, variant in variants.items()},
                text=raw,
            )
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{where}: template error line {exc.lineno}: {exc.message}") from None

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

    def documentation_label(self, element: str) -> str:
        return self.contract["documentation_elements"][element]

    def wording(self, card: "Card") -> tuple[str, str, str, str, dict, dict]:
        """(kind, indicator, summary, detail, suggestion templates) of a card from its rule's template."""
        template = self.templates[card.rule]
        variant = template.variants.get(card.variant, {}) if card.variant else {}
        if card.variant and card.variant not in template.variants:
            raise TemplateError(f"cards/{card.rule}.toml has no variant {card.variant!r}")
        values = dict(card.values)
        values.setdefault("evidence", _unique(card.evidence))
        values.setdefault("missing", [escaping.Markdown(self.documentation_label(m))
                                      for m in card.missing_documentation])
        values.setdefault("missing_elements", list(card.missing_documentation))
        values.setdefault("source", escaping.Markdown(template.source))
        summary = variant.get("summary", template.summary).render(values).strip()
        detail = variant.get("detail", template.detail).render(values).strip()
        for name, note_values in card.notes:
            detail += "\n\n" + self.notes[name].render(note_values).strip()
        suggestions = {**template.suggestions, **variant.get("suggestions", {})}
        return (variant.get("kind", template.kind), variant.get("indicator", template.indicator),
                summary, detail, {k: t for k, t in suggestions.items()}, values)


def escape_markdown(text: str) -> str:
    """Quoted clinical text shown as text, never as markdown or HTML (the EHR renders the detail):
    `escaping.markdown`, the one function for it."""
    return escaping.markdown(text)


SUMMARY_LIMIT = 140  # CDS Hooks: a summary is under 140 characters


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
    """A change the EHR can apply. `key` names its label in the rule's template [suggestions]."""

    key: str
    actions: list[Action] = field(default_factory=list)
    values: dict = field(default_factory=dict)
    is_recommended: bool | None = None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self, label: str) -> dict:
        out = {"label": label, "uuid": self.uuid}
        if self.is_recommended is not None:
            out["isRecommended"] = self.is_recommended
        if self.actions:
            out["actions"] = [a.to_json() for a in self.actions]
        return out


@dataclass
class Card:
    """What a rule concludes: its facts (`values`) and codes; wording comes from cards/<rule>.toml."""

    rule: str
    values: dict = field(default_factory=dict)
    variant: str | None = None
    current_codes: list[str] = field(default_factory=list)
    proposed_codes: list[str] = field(default_factory=list)
    missing_documentation: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    selection_behavior: str | None = None
    # The FHIR resource the card is about ("Condition/c1", "ServiceRequest/o1"); None when the card
    # is about the record as a whole. The resolver gives each subject one proposal; suppression
    # keys a dismissed card by (patient, subject, rule).
    subject: str | None = None
    # The code the card presumes its subject keeps or gets (an additional-code or documentation
    # card about M43.11 presumes M43.11): moot when another card changes the subject to another code.
    premise: str | None = None
    # A decision, never shown: the documentation supports keeping these codes together (unrelated
    # conditions, guideline I.A.12.a): removal cards on the same resources are not shown either.
    keeps: bool = False
    # Notes the detail ends with, (name, values): the wording is cards/contract.toml [notes].<name>
    # (the care setting's convention a card applied, a Condition read from SNOMED CT).
    notes: list = field(default_factory=list)
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self, catalogue: CardCatalogue, rules_base_url: str) -> dict:
        kind, indicator, summary, detail, labels, values = catalogue.wording(self)
        out = {
            "uuid": self.uuid,
            # a long value from the chart (a malformed code, say) cannot push it past the limit
            "summary": escaping.shorten_markdown(summary, SUMMARY_LIMIT),
            "indicator": indicator,
            "source": {
                "label": catalogue.product,
                "url": f"{rules_base_url.rstrip('/')}/rules/{self.rule}",
                "topic": catalogue.topic(kind),
            },
        }
        if detail:
            out["detail"] = detail
        if self.suggestions:
            out["suggestions"] = [s.to_json(labels[s.key].render({**values, **s.values}).strip())
                                  for s in self.suggestions]
            out["selectionBehavior"] = self.selection_behavior or "at-most-one"
        out["overrideReasons"] = catalogue.override_reasons()
        payload = {"rule": self.rule, "currentCodes": list(self.current_codes),
                   "proposedCodes": list(self.proposed_codes)}
        if self.missing_documentation:
            payload["missingDocumentation"] = list(self.missing_documentation)
        payload["evidence"] = [e.to_json() for e in _unique(self.evidence)]
        out["extension"] = {catalogue.contract["extension_key"]: payload}
        return out


MAX_EVIDENCE = 3


def _unique(evidence: list[Evidence]) -> list[Evidence]:
    """Each sentence quoted once (whatever finding of it the rule cited), at most MAX_EVIDENCE, in the
    rule's order: the strongest first, the newest first among equals (`rules.common.evidence_of`)."""
    seen, out = set(), []
    for e in evidence:
        text = " ".join(e.text.split())  # a hard-wrapped sentence is quoted on one line
        key = (e.reference, text)
        if key not in seen:
            seen.add(key)
            out.append(e._replace(text=text) if text != e.text else e)
        if len(out) == MAX_EVIDENCE:
            break
    return out


def contract_problems(card: dict, catalogue: CardCatalogue) -> list[str]:
    """Every way a card JSON breaks CDS Hooks 2.0 or the card contract (empty list = conforms).

    The structure is the card model's (`wire.Card`, the schema of /openapi.json's CardsResponse);
    here are what a schema does not say: no empty value anywhere outside the extension (resources
    in actions included), and the contract's vocabulary (cards/contract.toml: the kinds, the
    override reasons' system, the documentation elements; a missing-documentation card names them)."""
    problems = wire.card_problems(card)

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
    if not isinstance(card, dict):
        return problems
    source = card.get("source") if isinstance(card.get("source"), dict) else {}
    if source.get("label") != catalogue.product:
        problems.append(f"source.label must be {catalogue.product!r}")
    topic = source.get("topic") if isinstance(source.get("topic"), dict) else {}
    if topic.get("system") != catalogue.contract["kind_system"] or topic.get("code") not in catalogue.kinds:
        problems.append("source.topic must be a card kind of the contract")
    for n, reason in enumerate(card.get("overrideReasons") or []):
        if isinstance(reason, dict) and reason.get("system") != catalogue.contract["override_reason_system"]:
            problems.append(f"overrideReasons[{n}] must be an override reason of the contract")
    extension = card.get("extension") if isinstance(card.get("extension"), dict) else {}
    payload = extension.get(catalogue.contract["extension_key"])
    if isinstance(payload, dict):
        elements = catalogue.contract["documentation_elements"]
        missing = payload.get("missingDocumentation") if isinstance(payload.get("missingDocumentation"), list) else []
        for element in missing:
            if element not in elements:
                problems.append(f"missingDocumentation element {element!r} is not in the contract")
        if topic.get("code") == "missing-documentation" and not missing:
            problems.append("a missing-documentation card must name the missing elements")
    return problems

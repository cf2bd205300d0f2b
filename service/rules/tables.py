"""The code tables of knowledge/code_tables.toml: which code a card proposes, and how strongly.

Loaded and schema-checked once at import (a malformed table stops the service at start, naming
the entry); that every code exists in the tabular and every proposed code is billable is checked
by tests/test_code_tables.py against the loaded tabular.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..nlp.concepts import KNOWLEDGE, LexiconError

PATH = KNOWLEDGE / "code_tables.toml"
_TOP = {"root_injuries", "regions", "strength", "order_scope", "order_reasons", "thresholds", "discs", "causes", "neuro",
        "rheumatoid", "seventh", "fractures", "joints"}
_ADDITIONAL_KEYS = {"finding", "already", "proposed", "example"}
_FRACTURE_KEYS = {"vertebra", "pattern", "type", "displaced", "nondisplaced", "anterior", "posterior", "category",
                  "detail", "description", "example"}


@dataclass(frozen=True)
class Additional:
    finding: str
    already: tuple[str, ...]
    proposed: str
    example: str


@dataclass(frozen=True)
class FractureEntry:
    vertebra: str
    pattern: re.Pattern | None
    type: re.Pattern | None
    displaced: str
    nondisplaced: str
    anterior: str | None
    posterior: str | None
    category: str | None
    detail: bool
    description: str
    example: str


@dataclass(frozen=True)
class SeventhRule:
    character: str
    pattern: re.Pattern
    fracture_only: bool
    example: str


def _need(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise LexiconError(f"code_tables.toml: {where}: {message}")


def _regex(value: str, where: str) -> re.Pattern | None:
    if value == "":
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        raise LexiconError(f"code_tables.toml: {where}: bad pattern ({exc})") from None


def _codes(value, where: str) -> tuple[str, ...]:
    _need(isinstance(value, list) and all(isinstance(c, str) and c for c in value), where, "must be a list of codes")
    return tuple(value)


class CodeTables:
    def __init__(self, path: Path = PATH):
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        _need(not set(data) - _TOP, "top level", f"unknown tables {sorted(set(data) - _TOP)}")
        _need(set(data) == _TOP, "top level", f"missing tables {sorted(_TOP - set(data))}")
        self.region_digit: dict[str, str] = {}
        self.region_label: dict[str, str] = {}
        for region, spec in data["regions"].items():
            _need(set(spec) == {"digit", "label"} and re.fullmatch(r"\d", spec["digit"]), f"[regions.{region}]",
                  "needs a one-digit `digit` and a `label`")
            self.region_digit[region] = spec["digit"]
            self.region_label[region] = spec["label"]
        self.digit_region = {v: k for k, v in self.region_digit.items()}
        for key, value in data["strength"].items():
            _need(isinstance(value, int) and 0 <= value <= 100, f"[strength] {key}", "must be an integer 0-100")
        self._strength: dict[str, int] = data["strength"]
        scope = data["order_scope"]
        _need(set(scope) == {"value_sets", "reason_prefixes"}, "[order_scope]", "needs value_sets and reason_prefixes")
        self.spine_order_sets = _codes(scope["value_sets"], "[order_scope] value_sets")
        self._reason_prefixes = tuple(p.replace(".", "") for p in _codes(scope["reason_prefixes"],
                                                                          "[order_scope] reason_prefixes"))
        self.order_reasons: dict[str, str] = dict(data["order_reasons"])
        thresholds = data["thresholds"]
        _need(isinstance(thresholds.get("conservative_care_weeks"), int), "[thresholds]",
              "conservative_care_weeks must be a number of weeks")
        self.conservative_care_weeks: int = thresholds["conservative_care_weeks"]
        discs = data["discs"]
        _need({"unleveled", "cervicothoracic"} <= set(discs), "[discs]", "needs `unleveled` and `cervicothoracic`")
        self.disc_by_level = {k: v for k, v in discs.items() if k not in ("unleveled", "cervicothoracic")}
        for level in self.disc_by_level:
            _need(re.fullmatch(r"C\d-(?:C\d|T1)", level), f"[discs] {level}", "a level such as C5-C6")
        self.disc_unleveled, self.disc_cervicothoracic = discs["unleveled"], discs["cervicothoracic"]
        self.causes = self._additional(data["causes"], "causes")
        self.neuro = self._additional(data["neuro"], "neuro")
        ra = data["rheumatoid"]
        _need(set(ra) == {"coded", "seropositive", "seronegative", "unknown"}, "[rheumatoid]",
              "needs coded, seropositive, seronegative, unknown")
        self.ra_coded = _codes(ra["coded"], "[rheumatoid] coded")
        self.ra_options = {k: _codes(ra[k], f"[rheumatoid] {k}") for k in ("seropositive", "seronegative", "unknown")}
        seventh = data["seventh"]
        _need(isinstance(seventh.get("default"), str) and len(seventh["default"]) == 1, "[seventh]",
              "needs a one-character `default`")
        self.seventh_default = seventh["default"]
        self.seventh_rules = []
        for n, spec in enumerate(seventh.get("rules", [])):
            where = f"[[seventh.rules]] #{n + 1}"
            _need(set(spec) <= {"character", "pattern", "fracture_only", "example"} and len(spec.get("character", ""))
                  == 1 and spec.get("pattern") and spec.get("example"), where,
                  "needs a one-character `character`, a `pattern` and an `example`")
            self.seventh_rules.append(SeventhRule(spec["character"], _regex(spec["pattern"], where),
                                                  bool(spec.get("fracture_only")), spec["example"]))
        self.fractures = []
        for n, spec in enumerate(data["fractures"]):
            where = f"[[fractures]] #{n + 1}"
            _need(not set(spec) - _FRACTURE_KEYS, where, f"unknown keys {sorted(set(spec) - _FRACTURE_KEYS)}")
            _need(spec.get("vertebra") in ("C1", "C2") and "pattern" in spec and "displaced" in spec
                  and "nondisplaced" in spec and spec.get("description") and spec.get("example"), where,
                  "needs vertebra (C1/C2), pattern, displaced, nondisplaced, description, example")
            _need(bool(spec["displaced"]) or bool(spec.get("anterior") or spec.get("category")), where,
                  "an empty `displaced` needs `anterior`/`posterior` or a `category`")
            self.fractures.append(FractureEntry(
                spec["vertebra"], _regex(spec["pattern"], where), _regex(spec.get("type", ""), where),
                spec["displaced"], spec["nondisplaced"], spec.get("anterior"), spec.get("posterior"),
                spec.get("category"), bool(spec.get("detail")), spec["description"], spec["example"]))
        joints = data["joints"]
        _need(set(joints) == {"c0-c1", "c1-c2", "subluxation", "dislocation"}, "[joints]",
              "needs c0-c1, c1-c2, subluxation, dislocation")
        self.joints = dict(joints)
        roots = data["root_injuries"]
        _need(isinstance(roots.get("coded"), list) and set(roots) - {"coded"} <= set(self.region_digit),
              "[root_injuries]", "needs `coded` and stems by region (a region of [regions])")
        self.root_injury_coded = _codes(roots["coded"], "[root_injuries] coded")
        self.root_injury = {region: stem for region, stem in roots.items() if region != "coded"}

    @staticmethod
    def _additional(entries, name: str) -> tuple[Additional, ...]:
        out = []
        for n, spec in enumerate(entries):
            where = f"[[{name}]] #{n + 1}"
            _need(set(spec) == _ADDITIONAL_KEYS, where, f"needs exactly {sorted(_ADDITIONAL_KEYS)}")
            out.append(Additional(spec["finding"], _codes(spec["already"], where), spec["proposed"], spec["example"]))
        return tuple(out)

    def strength(self, rule: str, variant: str | None = None) -> int:
        if variant and f"{rule}:{variant}" in self._strength:
            return self._strength[f"{rule}:{variant}"]
        return self._strength.get(rule, 0)

    def fracture_for(self, text: str, on_c1: bool, on_c2: bool) -> FractureEntry | None:
        """The first entry of the fractured vertebra whose words match the fracture's sentences.
        Both vertebrae named: only a C2 entry with words of its own (a hangman or dens fracture);
        neither: None (only the category S12 is determinable)."""
        for entry in self.fractures:
            if entry.vertebra == "C2" and not on_c2 or entry.vertebra == "C1" and (not on_c1 or on_c2):
                continue
            if on_c1 and on_c2 and entry.pattern is None:
                continue
            if entry.pattern is not None and not entry.pattern.search(text):
                continue
            if entry.type is not None and not entry.type.search(text):
                continue
            return entry
        return None

    def seventh_for(self, text: str, fracture: bool) -> str:
        for rule in self.seventh_rules:
            if (fracture or not rule.fracture_only) and rule.pattern.search(text):
                return rule.character
        return self.seventh_default

    def is_spine_reason(self, code: str) -> bool:
        return code.replace(".", "").startswith(self._reason_prefixes)

    def all_codes(self) -> list[tuple[str, str]]:
        """(where, code) for every ICD-10-CM code the tables name: the tests check each in the tabular."""
        out = [("order_reasons", c) for pair in self.order_reasons.items() for c in pair]
        out += [("discs", c) for c in [*self.disc_by_level.values(), self.disc_unleveled, self.disc_cervicothoracic]]
        for name, table in (("causes", self.causes), ("neuro", self.neuro)):
            out += [(name, a.proposed) for a in table] + [(name, c) for a in table for c in a.already]
        out += [("rheumatoid", c) for c in self.ra_coded]
        out += [("rheumatoid", c) for codes in self.ra_options.values() for c in codes]
        return out


TABLES = CodeTables()

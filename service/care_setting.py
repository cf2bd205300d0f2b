"""Where the encounter takes place, and the coding convention for uncertain diagnoses it brings.

At an inpatient admission a diagnosis documented at discharge as "probable", "likely" or
"suspected" is coded as if established (ICD-10-CM Official Guidelines Section II.H, III.C for
secondary diagnoses); at an outpatient visit, an emergency department visit or an observation stay
it is not (Section IV.H: code the certain signs and symptoms). The setting is read from the
Encounter (class, then type), else the hook (encounter-discharge), else the outpatient convention.
The data is `knowledge/care_settings.toml`, checked here at load.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .nlp.concepts import KNOWLEDGE, LexiconError, finding_kinds as concept_kinds, read_toml

PATH = KNOWLEDGE / "care_settings.toml"
_TOP = {"default", "type_order", "diagnoses", "hooks", "settings", "conventions", "examples"}
_SETTING = {"label", "convention", "classes", "type_words"}
_CONVENTION = {"codes_uncertain", "guideline", "rule"}
_EXAMPLE = {"class", "class_display", "type_text", "hook", "no_encounter", "setting"}
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class CareSetting:
    name: str               # a key of [settings]: inpatient, observation, emergency, ambulatory
    label: str              # "inpatient admission"
    convention: str         # inpatient | outpatient
    codes_uncertain: bool   # an uncertain diagnosis is coded as if established (II.H)
    guideline: str          # the section the convention follows
    rule: str               # the convention in a coder's words
    basis: str              # what decided it: "Encounter.class IMP", "Encounter.type", "the hook", "no Encounter"


class CareSettings:
    def __init__(self, path: Path = PATH, finding_kinds: set[str] | None = None):
        name = Path(path).name
        data = read_toml(path)
        if set(data) - _TOP or not {"default", "settings", "conventions", "diagnoses"} <= set(data):
            raise LexiconError(f"{name}: keys must be {sorted(_TOP)} (default, settings, conventions, diagnoses required)")
        self.conventions = {}
        for key, spec in data["conventions"].items():
            if not isinstance(spec, dict) or set(spec) != _CONVENTION or not isinstance(spec["codes_uncertain"], bool) \
                    or not all(isinstance(spec[k], str) and spec[k].strip() for k in ("guideline", "rule")):
                raise LexiconError(f"{name}: [conventions.{key}] needs {sorted(_CONVENTION)}")
            self.conventions[key] = spec
        self.settings: dict[str, dict] = {}
        self._by_class: dict[str, str] = {}
        self._by_word: dict[str, set[str]] = {}
        for key, spec in data["settings"].items():
            where = f"{name}: [settings.{key}]"
            if not isinstance(spec, dict) or set(spec) != _SETTING:
                raise LexiconError(f"{where} needs exactly {sorted(_SETTING)}")
            if spec["convention"] not in self.conventions:
                raise LexiconError(f"{where}: convention {spec['convention']!r} is not one of {sorted(self.conventions)}")
            for code in spec["classes"]:
                if not isinstance(code, str) or code in self._by_class:
                    raise LexiconError(f"{where}: class {code!r} is not a code or is listed twice")
                self._by_class[code] = key
            for word in spec["type_words"]:
                if not isinstance(word, str) or not _WORD.fullmatch(word):
                    raise LexiconError(f"{where}: type word {word!r} must be one lower-case word")
                self._by_word.setdefault(word, set()).add(key)
            self.settings[key] = spec
        self.type_order = list(data.get("type_order", list(self.settings)))
        if sorted(self.type_order) != sorted(self.settings):
            raise LexiconError(f"{name}: type_order must list every setting once")
        self.default = data["default"]
        self.hooks = dict(data.get("hooks", {}))
        for value in [self.default, *self.hooks.values()]:
            if value not in self.settings:
                raise LexiconError(f"{name}: {value!r} is not a setting")
        self.diagnoses = frozenset(data["diagnoses"])
        finding_kinds = concept_kinds() if finding_kinds is None else finding_kinds
        if self.diagnoses - finding_kinds:
            raise LexiconError(f"{name}: diagnoses not in concepts.toml: {sorted(self.diagnoses - finding_kinds)}")
        self.examples = []
        for n, example in enumerate(data.get("examples", [])):
            if not isinstance(example, dict) or set(example) - _EXAMPLE or example.get("setting") not in self.settings:
                raise LexiconError(f"{name}: [[examples]] {n + 1} needs a setting of [settings] and keys among {sorted(_EXAMPLE)}")
            self.examples.append(example)

    def _make(self, key: str, basis: str) -> CareSetting:
        spec = self.settings[key]
        convention = self.conventions[spec["convention"]]
        return CareSetting(key, spec["label"], spec["convention"], convention["codes_uncertain"],
                           convention["guideline"], convention["rule"], basis)

    def of(self, encounter, hook: str) -> CareSetting:
        """The setting of an Encounter model (fhir.resources R4B, or None) at a hook."""
        if encounter is None:
            return self._make(self.default, "no Encounter")
        klass = getattr(encounter, "class_fhir", None)
        code = getattr(klass, "code", None)
        code = code.strip().upper() if isinstance(code, str) else None  # "imp" as sent by some EHRs
        if code in self._by_class:
            return self._make(self._by_class[code], f"Encounter.class {code}")
        words = set(_WORD.findall((getattr(klass, "display", None) or "").lower()[:500]))  # "inpatient encounter"
        for concept in getattr(encounter, "type", None) or []:
            texts = [concept.text or ""] + [c.display or "" for c in concept.coding or []]
            for text in texts:
                words.update(_WORD.findall(text.lower()[:500]))
        found = {key for word in words for key in self._by_word.get(word, ())}
        for key in self.type_order:
            if key in found:
                return self._make(key, "Encounter.type or class display")
        if hook in self.hooks:
            return self._make(self.hooks[hook], f"the {hook} hook")
        return self._make(self.default, "the Encounter names no setting")


CARE_SETTINGS = CareSettings()

"""The value sets: study, procedure and order codes (LOINC, CPT) by what they are, and the SNOMED CT
concepts read as findings. Data in `service/knowledge/valuesets.toml`, checked at load."""
from __future__ import annotations

import tomllib
from pathlib import Path

from .nlp.concepts import KNOWLEDGE, LexiconError

FAMILIES = ("studies", "procedures", "orders")
_ENTRY_KEYS = {"label", "loinc", "cpt"}


class ValueSets:
    def __init__(self, path: Path = KNOWLEDGE / "valuesets.toml"):
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        name = Path(path).name
        unknown = set(data) - {"systems", "snomed_findings", *FAMILIES}
        if unknown:
            raise LexiconError(f"{name}: unknown tables {sorted(unknown)}")
        self.systems = data["systems"]
        self.labels: dict[str, str] = {}
        self._by_code: dict[tuple[str, str], list[str]] = {}
        for family in FAMILIES:
            for entry, spec in data.get(family, {}).items():
                if not isinstance(spec, dict) or set(spec) - _ENTRY_KEYS or not isinstance(spec.get("label"), str):
                    raise LexiconError(f"{name}: [{family}.{entry}] needs a label and only {sorted(_ENTRY_KEYS)}")
                self.labels[entry] = spec["label"]
                for system_key in ("loinc", "cpt"):
                    codes = spec.get(system_key, [])
                    if not all(isinstance(c, str) and c for c in codes):
                        raise LexiconError(f"{name}: [{family}.{entry}] {system_key} must be a list of codes")
                    for code in codes:
                        self._by_code.setdefault((self.systems[system_key], code), []).append(entry)
        self.snomed_findings: dict[str, str] = data["snomed_findings"]

    def kinds(self, system: str | None, code: str | None) -> list[str]:
        return self._by_code.get((system or "", code or ""), [])

    def members(self, name: str) -> set[str]:
        return {code for (system, code), names in self._by_code.items() if name in names}

"""Sections of a document: which header each sentence sits under, and what that does to it.

The lexicon is data (`service/knowledge/sections.toml`, checked at load): header spellings →
a section kind, and per kind what it does to the findings under it (history, family, the reason
for a study, a differential, templated ROS negatives). A header starts a line and ends with ":"
or "-", or is the whole line; a section runs from its header to the next one. One regular
expression per document type finds every header in one pass (linear in the text).
"""
from __future__ import annotations

import bisect
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .concepts import KNOWLEDGE, LexiconError, require_text

EFFECTS = ("none", "historical", "uncertain", "family", "ignored")
DOCUMENTS = ("report", "note", "any")
_KIND_KEYS = {"assertion", "negation_scope", "planned"}
_HEADER_KEYS = {"kind", "literals", "documents", "example", "example_finding", "example_assertion"}
EXAMPLE_ASSERTIONS = ("affirmed", "negated", "uncertain", "historical", "dropped")


@dataclass(frozen=True)
class SectionKind:
    name: str
    assertion: str          # one of EFFECTS
    sentence_negation: bool  # negations reach the end of their sentence (templated ROS)
    planned: frozenset = frozenset()  # findings the section speaks of as still to come (a plan's care)


@dataclass(frozen=True)
class HeaderEntry:
    kind: str
    literals: tuple[str, ...]
    documents: str
    example: str
    example_finding: str
    example_assertion: str


@dataclass(frozen=True)
class Section:
    kind: SectionKind
    header_start: int
    header_end: int   # the text of the section starts here
    end: int


NO_SECTION = SectionKind("none", "none", False)


class Sections:
    """The sections of one document, with a look-up by position."""

    def __init__(self, sections: list[Section]):
        self.sections = sections
        self._starts = [s.header_start for s in sections]

    @property
    def headers(self) -> list[tuple[int, int]]:
        return [(s.header_start, s.header_end) for s in self.sections]

    def at(self, position: int) -> SectionKind:
        i = bisect.bisect_right(self._starts, position) - 1
        if i < 0:
            return NO_SECTION
        return self.sections[i].kind


class SectionLexicon:
    def __init__(self, path: Path = KNOWLEDGE / "sections.toml"):
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        name = Path(path).name
        unknown = set(raw) - {"kinds", "headers"}
        if unknown:
            raise LexiconError(f"{name}: unknown tables {sorted(unknown)}")
        self.kinds: dict[str, SectionKind] = {}
        for kind, spec in raw.get("kinds", {}).items():
            if not isinstance(spec, dict) or set(spec) - _KIND_KEYS:
                raise LexiconError(f"{name}: [kinds.{kind}] keys must be among {sorted(_KIND_KEYS)}")
            if spec.get("assertion") not in EFFECTS:
                raise LexiconError(f"{name}: [kinds.{kind}] assertion must be one of {EFFECTS}")
            if spec.get("negation_scope", "words") not in ("words", "sentence"):
                raise LexiconError(f"{name}: [kinds.{kind}] negation_scope must be 'words' or 'sentence'")
            planned = spec.get("planned", [])
            if not isinstance(planned, list) or not all(isinstance(x, str) for x in planned):
                raise LexiconError(f"{name}: [kinds.{kind}] planned must be a list of findings")
            self.kinds[kind] = SectionKind(kind, spec["assertion"], spec.get("negation_scope") == "sentence",
                                           frozenset(planned))
        self.entries: list[HeaderEntry] = []
        by_document: dict[str, dict[str, str]] = {"report": {}, "note": {}}
        for n, spec in enumerate(raw.get("headers", [])):
            where = f"{name} header #{n + 1}"
            if not isinstance(spec, dict):
                raise LexiconError(f"{where}: must be a table")
            unknown = set(spec) - _HEADER_KEYS
            if unknown:
                raise LexiconError(f"{where}: unknown keys {sorted(unknown)}")
            if spec.get("kind") not in self.kinds:
                raise LexiconError(f"{where}: kind must be one of {sorted(self.kinds)}")
            documents = spec.get("documents", "any")
            if documents not in DOCUMENTS:
                raise LexiconError(f"{where}: documents must be one of {DOCUMENTS}")
            literals = spec.get("literals")
            if not literals or not all(isinstance(x, str) and x.strip() == x and x for x in literals):
                raise LexiconError(f"{where}: literals must be a list of non-empty strings")
            require_text(spec, ("example", "example_finding", "example_assertion"), where)
            if spec["example_assertion"] not in EXAMPLE_ASSERTIONS:
                raise LexiconError(f"{where}: example_assertion must be one of {EXAMPLE_ASSERTIONS}")
            for literal in literals:
                for document in (("report", "note") if documents == "any" else (documents,)):
                    previous = by_document[document].get(literal.lower())
                    if previous is not None and previous != spec["kind"]:
                        raise LexiconError(f"{where}: {literal!r} is already a {previous} header in {document}s")
                    by_document[document][literal.lower()] = spec["kind"]
            self.entries.append(HeaderEntry(spec["kind"], tuple(literals), documents, spec["example"],
                                            spec["example_finding"], spec["example_assertion"]))
        self._kind_of = by_document
        self._patterns = {document: _header_pattern(list(names)) for document, names in by_document.items()}

    def sections(self, text: str, document: str = "note", deadline=None) -> Sections:
        """The sections of a text (`document`: "report" for a DiagnosticReport, else "note")."""
        kinds = self._kind_of[document]
        found: list[tuple[int, int, SectionKind]] = []
        for n, m in enumerate(self._patterns[document].finditer(text)):
            if deadline is not None and n % 256 == 255:
                deadline.check()
            literal = " ".join(m.group("name").lower().split())
            kind = kinds.get(literal)
            if kind is None or (len(literal) <= 3 and ":" not in m.group("end")):
                continue  # "CC", "PE", "A" alone on a line are too often something else: they need the colon
            found.append((m.start("name"), m.end(), self.kinds[kind]))
        sections = [Section(kind, start, end, found[i + 1][0] if i + 1 < len(found) else len(text))
                    for i, (start, end, kind) in enumerate(found)]
        return Sections(sections)


def _header_pattern(literals: list[str]) -> re.Pattern:
    """A header at the start of a line: a known name, then ':' (or ' - '), or the end of the line;
    a date, time or author between the name and its colon belongs to the header
    ("ADDENDUM 11/20/2026 16:05 (I. Salazar, MD):")."""
    names = sorted(literals, key=len, reverse=True)
    alternatives = "|".join(r"\s+".join(re.escape(w) for w in x.split()) for x in names)
    return re.compile(r"(?im)^[ \t]*(?P<name>" + alternatives + r")(?P<end>[ \t]*:|[ \t]+-[ \t]|[ \t]*(?=\r?\n|$)|[ \t]+[(\d][^\n:]{0,60}(?::\d[^\n:]{0,60})*:)[ \t]*")

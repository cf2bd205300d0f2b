"""Finding targets in a sentence, from the reviewable lexicon `service/knowledge/concepts.toml`."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

KNOWLEDGE = Path(__file__).resolve().parent.parent / "knowledge"
LEVEL_SOURCES = ("segment", "root", "none")


class LexiconError(ValueError):
    """A lexicon file that does not follow its schema: refused at load, with the reason."""


@dataclass(frozen=True)
class Target:
    finding: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Concept:
    finding: str
    level_from: str
    pattern: re.Pattern
    ambiguous: re.Pattern | None = None
    context: tuple[str, ...] = ()
    not_context: tuple[str, ...] = ()

    def accepts(self, match_text: str, sentence: str) -> bool:
        """An ambiguous match ("RA") counts only with its context and without its counter-context."""
        if self.ambiguous is None or not self.ambiguous.search(match_text):
            return True
        lowered = sentence.lower()
        if any(phrase.lower() in lowered for phrase in self.not_context):
            return False
        return any(phrase.lower() in lowered for phrase in self.context)


_KEYS = {"level_from", "patterns", "ambiguous", "context", "not_context"}


class ConceptLexicon:
    def __init__(self, path: Path = KNOWLEDGE / "concepts.toml"):
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        self.concepts: dict[str, Concept] = {}
        for finding, spec in raw.items():
            if not isinstance(spec, dict):
                raise LexiconError(f"{path.name}: [{finding}] must be a table")
            unknown = set(spec) - _KEYS
            if unknown:
                raise LexiconError(f"{path.name}: [{finding}] has unknown keys {sorted(unknown)}")
            if spec.get("level_from") not in LEVEL_SOURCES:
                raise LexiconError(f"{path.name}: [{finding}] level_from must be one of {LEVEL_SOURCES}")
            patterns = spec.get("patterns")
            if not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise LexiconError(f"{path.name}: [{finding}] needs a list of patterns")
            try:
                compiled = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
                ambiguous = re.compile(spec["ambiguous"]) if spec.get("ambiguous") else None
            except re.error as exc:
                raise LexiconError(f"{path.name}: [{finding}] has an invalid pattern ({exc})") from None
            self.concepts[finding] = Concept(finding, spec["level_from"], compiled, ambiguous,
                                             tuple(spec.get("context", ())), tuple(spec.get("not_context", ())))

    @property
    def findings(self) -> list[str]:
        return list(self.concepts)

    def targets(self, sentence: str) -> list[Target]:
        found = []
        for concept in self.concepts.values():
            for m in concept.pattern.finditer(sentence):
                if m.end() > m.start() and concept.accepts(m.group(), sentence):
                    found.append(Target(concept.finding, m.start(), m.end(), m.group()))
        return sorted(found, key=lambda t: (t.start, -t.end))

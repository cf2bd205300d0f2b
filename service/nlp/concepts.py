"""Finding targets in a sentence, from the reviewable lexicon `service/knowledge/concepts.toml`."""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

try:  # the standard library's own regular-expression parser, to find what every match must contain
    from re import _constants as sre_constants, _parser as sre_parse
except ImportError:  # Python < 3.11
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

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
    anchors: tuple[str, ...] | None = None  # lower-case strings one of which every match contains

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
                                             tuple(spec.get("context", ())), tuple(spec.get("not_context", ())),
                                             anchors_of(patterns))

    @property
    def findings(self) -> list[str]:
        return list(self.concepts)

    def candidates(self, lowered_text: str) -> list[tuple[Concept, tuple[str, ...] | None]]:
        """The concepts that may occur in a text, each with the anchors the text contains:
        one pass of substring tests per text, so that each sentence tests only those."""
        out = []
        for concept in self.concepts.values():
            if concept.anchors is None:
                out.append((concept, None))
            else:
                present = tuple(a for a in concept.anchors if a in lowered_text)
                if present:
                    out.append((concept, present))
        return out

    def targets(self, sentence: str, candidates=None) -> list[Target]:
        found = []
        lowered = sentence.lower()
        for concept, anchors in candidates if candidates is not None else self.candidates(lowered):
            if anchors is not None and not any(a in lowered for a in anchors):
                continue
            for m in concept.pattern.finditer(sentence):
                if m.end() > m.start() and concept.accepts(m.group(), sentence):
                    found.append(Target(concept.finding, m.start(), m.end(), m.group()))
        return sorted(found, key=lambda t: (t.start, -t.end))


# ------------------------------------------------------------------ anchors
# Measured on a 9 KB report: a case-insensitive pattern that starts with \b costs about 110 µs a
# scan, a substring test about 1 µs. Each pattern's anchors are read from its own parse tree, so
# adding a pattern to the lexicon needs nothing else; a pattern without a required literal gets
# no anchors and is always scanned.
def anchors_of(patterns: list[str]) -> tuple[str, ...] | None:
    anchors: set[str] = set()
    for pattern in patterns:
        required = _required(sre_parse.parse(pattern, re.IGNORECASE))
        if not required:
            return None
        anchors |= required
    return tuple(sorted(anchors))


def _required(items) -> set[str] | None:
    """Strings (lower case) one of which every match of this parsed sequence contains."""
    candidates: list[set[str]] = []
    run = ""

    def close():
        nonlocal run
        if len(run) >= 2:
            candidates.append({run})
        run = ""

    for op, av in items:
        if op == sre_constants.LITERAL:
            run += chr(av).lower()
            continue
        close()
        if op == sre_constants.SUBPATTERN:
            inner = _required(av[-1])
            if inner:
                candidates.append(inner)
        elif op == sre_constants.BRANCH:
            union: set[str] = set()
            for branch in av[1]:
                inner = _required(branch)
                if not inner:
                    union = set()
                    break
                union |= inner
            if union:
                candidates.append(union)
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and av[0] >= 1:
            inner = _required(av[2])
            if inner:
                candidates.append(inner)
    close()
    if not candidates:
        return None
    return max(candidates, key=lambda c: min(len(x) for x in c))

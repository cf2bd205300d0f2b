"""ConText (Harkema et al., 2009): is a finding negated, uncertain, historical, or about family?

Triggers come from `service/knowledge/context_rules.json`, checked against its schema at load.
A trigger modifies the findings in its scope: after it (FORWARD), before it (BACKWARD) or both,
up to a terminator, the sentence end, or `max_scope` words. PSEUDO phrases ("no interval
change") contain a trigger word but are not triggers. Where several triggers reach a finding,
negation wins over family, family over uncertainty, uncertainty over history.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .concepts import KNOWLEDGE, LexiconError, Target

CATEGORIES = ("NEGATED_EXISTENCE", "POSSIBLE_EXISTENCE", "HYPOTHETICAL", "HISTORICAL", "FAMILY",
              "PSEUDO", "TERMINATE")
DIRECTIONS = ("FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO")
ASSERTIONS = ("affirmed", "negated", "uncertain", "historical", "family")
_PRIORITY = {"negated": 0, "family": 1, "uncertain": 2, "historical": 3}
_RULE_KEYS = {"literal", "pattern", "category", "direction", "max_scope", "example", "example_finding",
              "example_assertion"}
DEFAULT_SCOPE = {"FORWARD": 10, "BACKWARD": 6}
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class ContextRule:
    text: str  # the literal or the pattern, as written
    category: str
    direction: str
    assertion: str | None
    max_scope: int | None
    example: str
    example_finding: str
    example_assertion: str


@dataclass(frozen=True)
class Trigger:
    rule: ContextRule
    start: int
    end: int


class ContextLexicon:
    def __init__(self, path: Path = KNOWLEDGE / "context_rules.json"):
        data = json.loads(Path(path).read_text())
        mapping = data.get("categories", {})
        self.rules: list[ContextRule] = []
        alternatives: list[tuple[int, str, int]] = []
        for n, raw in enumerate(data.get("rules", [])):
            where = f"{Path(path).name} rule #{n + 1}"
            if not isinstance(raw, dict):
                raise LexiconError(f"{where}: must be an object")
            unknown = set(raw) - _RULE_KEYS
            if unknown:
                raise LexiconError(f"{where}: unknown keys {sorted(unknown)}")
            if ("literal" in raw) == ("pattern" in raw):
                raise LexiconError(f"{where}: needs exactly one of literal or pattern")
            if raw.get("category") not in CATEGORIES:
                raise LexiconError(f"{where}: category must be one of {CATEGORIES}")
            if raw.get("direction") not in DIRECTIONS:
                raise LexiconError(f"{where}: direction must be one of {DIRECTIONS}")
            for key in ("example", "example_finding", "example_assertion"):
                if not isinstance(raw.get(key), str) or not raw[key]:
                    raise LexiconError(f"{where}: {key} is required (every trigger is tested by a sentence)")
            if raw["example_assertion"] not in ASSERTIONS:
                raise LexiconError(f"{where}: example_assertion must be one of {ASSERTIONS}")
            text = raw.get("literal", raw.get("pattern"))
            if "literal" in raw:
                words = [re.escape(w) for w in text.split()]
                regex = r"\s+".join(words)
                regex = (r"\b" if text[0].isalnum() else "") + regex + (r"\b" if text[-1].isalnum() else "")
            else:
                regex = text
            try:
                re.compile(regex)
            except re.error as exc:
                raise LexiconError(f"{where}: invalid pattern ({exc})") from None
            rule = ContextRule(text, raw["category"], raw["direction"], mapping.get(raw["category"]),
                               raw.get("max_scope"), raw["example"], raw["example_finding"],
                               raw["example_assertion"])
            self.rules.append(rule)
            alternatives.append((len(text), regex, len(self.rules) - 1))
        # Longest first: at one position the longest trigger wins ("no interval change" over "no").
        alternatives.sort(key=lambda a: -a[0])
        self._pattern = re.compile("|".join(f"(?P<r{i}>{rx})" for _, rx, i in alternatives), re.IGNORECASE)

    def triggers(self, sentence: str) -> list[Trigger]:
        out = []
        for m in self._pattern.finditer(sentence):
            out.append(Trigger(self.rules[int(m.lastgroup[1:])], m.start(), m.end()))
        return out

    def assertions(self, sentence: str, targets: list[Target]) -> list[str]:
        """The assertion of each target (same order): affirmed, negated, uncertain, historical, family."""
        if not targets:
            return []
        triggers = [t for t in self.triggers(sentence) if t.rule.category != "PSEUDO"]
        terminators = [t for t in triggers if t.rule.category == "TERMINATE"]
        modifiers = [t for t in triggers if t.rule.category != "TERMINATE"]
        results = []
        for target in targets:
            found: list[str] = []
            for trigger in modifiers:
                if trigger.start < target.end and target.start < trigger.end:
                    continue  # a trigger inside the finding's own words ("without radiation")
                if self._reaches(sentence, trigger, target, terminators):
                    found.append(trigger.rule.assertion)
            results.append(min(found, key=_PRIORITY.__getitem__) if found else "affirmed")
        return results

    @staticmethod
    def _reaches(sentence: str, trigger: Trigger, target: Target, terminators: list[Trigger]) -> bool:
        direction = trigger.rule.direction
        if trigger.end <= target.start and direction in ("FORWARD", "BIDIRECTIONAL"):
            gap = (trigger.end, target.start)
            limit = trigger.rule.max_scope or DEFAULT_SCOPE["FORWARD"]
        elif target.end <= trigger.start and direction in ("BACKWARD", "BIDIRECTIONAL"):
            gap = (target.end, trigger.start)
            limit = trigger.rule.max_scope or DEFAULT_SCOPE["BACKWARD"]
        else:
            return False
        if any(gap[0] <= t.start and t.end <= gap[1] for t in terminators):
            return False
        return len(_WORD.findall(sentence[gap[0]:gap[1]])) <= limit

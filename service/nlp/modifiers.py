"""What each finding is said to be: acute, chronic, old, sequela; traumatic; congenital, acquired.

A modifier belongs to the finding it modifies, the nearest finding of its sentence that can carry
one (`HEADS`), on either side, never across another such finding: "Acquired C1-C2 slip above a
congenital C2-3 fusion" makes the slip acquired and the fusion congenital. And a cause belongs to
the finding the note links it to ("radiculopathy secondary to C1-C2 facet arthropathy"): `links`.
Both are linear: each modifier looks at its two neighbouring heads, each pair of neighbouring
findings is tested once.
"""
from __future__ import annotations

import bisect
import re
import tomllib
from pathlib import Path

from .concepts import KNOWLEDGE, LexiconError, Target, anchors_of, require_text

# Findings a modifier can belong to.
HEADS = frozenset({"displacement", "dislocation", "fracture", "instability", "fusion", "anomaly", "radiculopathy",
                   "myelopathy", "cord-compression", "spondylosis", "disc-disorder", "stenosis",
                   "foraminal-stenosis", "occipital-neuralgia", "trauma", "axial-neck-pain", "c1c2-radicular",
                   "radicular-signs"})
# The findings whose modifiers the rules read (an injury's acuity, a slip's origin): a sentence
# without one of them is not searched for modifiers at all (the other heads only take the
# modifiers that are not theirs from those).
MODIFIED = frozenset({"displacement", "dislocation", "fracture", "trauma", "instability"})
# Causes and what they may cause, for `links`.
CAUSES = frozenset({"spondylosis", "disc-disorder", "stenosis", "foraminal-stenosis", "instability",
                    "rheumatoid-arthritis", "trauma", "fracture", "displacement", "dislocation"})
EFFECTS = frozenset({"radiculopathy", "radicular-signs", "c1c2-radicular", "myelopathy", "cord-compression",
                     "occipital-neuralgia", "axial-neck-pain"})
# effect ... CONNECTOR ... cause ("radiculopathy due to stenosis"), and cause ... CONNECTOR ... effect
_EFFECT_OF = re.compile(r"\b(?:due\s+to|secondary\s+to|caused\s+by|from|related\s+to|attributed\s+to|"
                        r"attributable\s+to|as\s+a\s+result\s+of|because\s+of|resulting\s+from|in\s+the\s+setting\s+of|"
                        r"owing\s+to|from\s+the|by)\b|\b2/2\b|\bd/t\b", re.IGNORECASE)
_CAUSING = re.compile(r"\b(?:causing|resulting\s+in|producing|with\s+resultant|with\s+resulting|with|"
                      r"leading\s+to|contributing\s+to|compressing|impinging(?:\s+on)?|abutting|explains?|"
                      r"accounts?\s+for|responsible\s+for)\b", re.IGNORECASE)
# ... and what between them says the second finding is the patient's, not the first one's cause
# ("radiculopathy from a vertebral artery loop, in a patient with RA of the hands").
_NO_LINK = re.compile(r";|\bbut\b|\bhowever\b|\balthough\b|\.\s|\bnot\b|\bno\b|n't\b|\bunrelated\b|\brather\s+than\b|"
                      r"\bunlikely\b|\bwithout\b|\bnor\b|\bpatient\b|\bwho\b|\bhistory\s+of\b", re.IGNORECASE)
_ADJECTIVE = re.compile(r"(?:post-?\s?)?traumatic")
# What an injury can cause (beside the effects above): "subluxation of C1 on C2 from the MVC".
INJURED = frozenset({"displacement", "dislocation", "instability", "fracture"})
_AFTER = re.compile(r"\b(?:after|following|sustained\s+in)\b", re.IGNORECASE)
MAX_GAP = 60  # characters between a modifier and its finding: further off, it modifies something else
_KEYS = {"patterns", "example", "example_finding", "not_finding", "attaches"}
ATTACHES = ("nearest", "before", "after")


class ModifierLexicon:
    def __init__(self, path: Path = KNOWLEDGE / "modifiers.toml"):
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        name = Path(path).name
        self.examples: dict[str, tuple[str, str, str | None]] = {}
        self._attaches: dict[str, str] = {}
        patterns = []
        for modifier, spec in raw.items():
            if not isinstance(spec, dict) or set(spec) - _KEYS:
                raise LexiconError(f"{name}: [{modifier}] keys must be among {sorted(_KEYS)}")
            require_text(spec, ("example", "example_finding"), f"{name}: [{modifier}]")
            if not spec.get("patterns") or not all(isinstance(p, str) and p == p.lower() for p in spec["patterns"]):
                raise LexiconError(f"{name}: [{modifier}] needs lower-case patterns")
            if spec.get("attaches", "nearest") not in ATTACHES:
                raise LexiconError(f"{name}: [{modifier}] attaches must be one of {ATTACHES}")
            self._attaches[modifier] = spec.get("attaches", "nearest")
            if not re.fullmatch(r"[a-z]+", modifier):
                raise LexiconError(f"{name}: [{modifier}] a modifier's name is one lower-case word")
            patterns.append(f"(?P<{modifier}>" + "|".join(f"(?:{p})" for p in spec["patterns"]) + ")")
            self.examples[modifier] = (spec["example"], spec["example_finding"], spec.get("not_finding"))
        every = [p for spec in raw.values() for p in spec["patterns"]]
        self._anchors = anchors_of(every)  # a sentence without any of these holds no modifier
        try:
            self._pattern = re.compile("|".join(patterns))
        except re.error as exc:
            raise LexiconError(f"{name}: invalid pattern ({exc})") from None
        self.names = tuple(raw)

    def attach(self, lowered_sentence: str, targets: list[Target], assertions: list[str] | None = None
               ) -> list[frozenset[str]]:
        """The modifiers of each target (same order; `targets` sorted by start). With `assertions`
        (the targets'), a negated trauma adjective ("no acute traumatic malalignment") modifies
        no other finding."""
        heads = [t for t in targets if t.finding in HEADS]
        out: dict[int, set[str]] = {}
        if not any(t.finding in MODIFIED for t in heads) or (self._anchors is not None and not any(a in lowered_sentence for a in self._anchors)):
            return [frozenset()] * len(targets)
        head_starts = [h.start for h in heads]
        index = {id(t): n for n, t in enumerate(targets)}
        for m in self._pattern.finditer(lowered_sentence):
            name = m.lastgroup
            k = bisect.bisect_right(head_starts, m.start())
            before = heads[k - 1] if k > 0 else None
            after = heads[k] if k < len(heads) else None
            side = self._attaches[name]
            if before is not None and before.end > m.start():  # inside the head's own words
                owner = before
            elif side == "before" and before is not None:
                owner = before
            elif side == "after" and after is not None:
                owner = after
            else:
                gap_before = m.start() - before.end if before is not None else None
                gap_after = after.start - m.end() if after is not None else None
                if gap_after is not None and (gap_before is None or gap_after <= gap_before):
                    owner = after
                else:
                    owner = before
            if owner is not None and owner.finding == "trauma" and _ADJECTIVE.fullmatch(owner.text.lower()):
                # "Traumatic anterolisthesis", "acute post-traumatic C1-C2 subluxation": the adjective
                # is a trauma finding of its own words, and it and its modifiers belong to the
                # finding it qualifies (an event noun, "the MVC", modifies nothing else: the note
                # links it to what it caused, `links`). Negated ("no acute traumatic
                # malalignment"), it qualifies nothing.
                k = index[id(owner)]
                if assertions is not None and assertions[k] == "negated":
                    continue
                neighbours = [t for t in targets[k + 1:k + 2] + targets[max(0, k - 1):k]
                              if t.finding in HEADS and t.finding != "trauma"]
                owner = neighbours[0] if neighbours else owner
            if owner is not None and _gap(owner, m.start(), m.end()) <= MAX_GAP:
                out.setdefault(index[id(owner)], set()).add(name)
        return [frozenset(out.get(n, ())) for n in range(len(targets))]


def _gap(head: Target, start: int, end: int) -> int:
    return max(0, start - head.end, head.start - end)


def links(sentence: str, targets: list[Target], assertions: list[str] | None = None) -> list[frozenset[int]]:
    """For each target (sorted by start), the indexes of the targets the sentence links it to as
    cause or effect: neighbouring cause and effect findings joined by a causal word, nothing
    between them that ends the clause or denies the link ("does not account for"), neither of them
    negated."""
    relevant = [n for n, t in enumerate(targets) if (t.finding in CAUSES or t.finding in EFFECTS)
                and (assertions is None or assertions[n] != "negated")]
    out: list[set[int]] = [set() for _ in targets]
    for a, b in zip(relevant, relevant[1:]):
        first, second = targets[a], targets[b]
        gap = sentence[first.end:second.start]
        if len(gap) > 120 or _NO_LINK.search(gap):
            continue
        if first.finding in EFFECTS and second.finding in CAUSES and _EFFECT_OF.search(gap):
            pass
        elif first.finding in CAUSES and second.finding in EFFECTS and _CAUSING.search(gap):
            pass
        elif first.finding in INJURED and second.finding == "trauma" and (_EFFECT_OF.search(gap) or _AFTER.search(gap)):
            pass  # "C1-C2 subluxation from the MVC", "dens fracture after a fall"
        elif first.finding == "trauma" and second.finding in INJURED and _CAUSING.search(gap):
            pass  # "MVC with resulting C1-C2 subluxation"
        else:
            continue
        out[a].add(b)
        out[b].add(a)
    return [frozenset(x) for x in out]

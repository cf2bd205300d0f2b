"""The reviewable knowledge files of this folder. Most are loaded by the module that reads them
(`service/nlp/`, `service/valuesets.py`, `service/rules/tables.py`); this module loads
`queries.toml`, what a missing-documentation card asks the provider (`service/rules/queries.py`).

`load_queries` checks the file against its schema (described at the top of the file) and refuses
it with the entry and the reason; that the codes are billable and that every element's example
gives what it says are tested (tests/test_queries.py).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..nlp.concepts import LexiconError, read_toml

KNOWLEDGE = Path(__file__).resolve().parent
QUERIES = KNOWLEDGE / "queries.toml"

OTHER = "other"
UNDETERMINED = "clinically undetermined"
_TOP_KEYS = {"order", "unknown_condition", "families", "elements"}
_FAMILY_KEYS = {"prefixes", "condition"}
_ELEMENT_KEYS = {"question", "families", "options", "example"}
_ELEMENT_OPTIONAL = {"family_questions"}
_OPTION_KEYS = {"label", "codes", "keeps", "families"}
_EXAMPLE_KEYS = {"current", "proposed", "answer", "sets"}


class QueryError(LexiconError):
    """queries.toml does not follow its schema: refused at load, naming the entry."""


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple[str, ...]
    condition: str


@dataclass(frozen=True)
class Option:
    label: str
    codes: dict            # family → the code this answer means for it
    keeps: bool            # the answer confirms the code already coded
    families: tuple[str, ...] | None  # offered only for these families (None: for every card)

    def offered_for(self, family: str | None) -> bool:
        return self.families is None or family in self.families


@dataclass(frozen=True)
class Element:
    name: str
    question: str
    families: tuple[str, ...]
    options: tuple[Option, ...]
    example: dict
    family_questions: dict = None  # family → its own wording of the question

    def options_for(self, family: str | None) -> list[Option]:
        return [o for o in self.options if o.offered_for(family)]


class Queries:
    """The questions per documentation element, and the code families their answers map into."""

    def __init__(self, order: tuple[str, ...], unknown_condition: str, families: dict[str, Family],
                 elements: dict[str, Element]):
        self.order = order
        self.unknown_condition = unknown_condition
        self.families = families
        self.elements = elements

    def element_to_ask(self, missing) -> Element | None:
        """The element that matters most among `missing` (the `order` of the file)."""
        for name in self.order:
            if name in missing:
                return self.elements[name]
        return None

    def family_of(self, code: str | None, among=None) -> str | None:
        """The family whose longest prefix covers `code` (among the named families, or all)."""
        best, length = None, -1
        for name in (self.families if among is None else among):
            for prefix in self.families[name].prefixes:
                if code and code.startswith(prefix) and len(prefix) > length:
                    best, length = name, len(prefix)
        return best

    def family_of_card(self, element: Element, codes) -> str | None:
        """The family a question is about: the first of the card's codes (proposed, then current)
        in one of the element's families, else in any family."""
        for among in (element.families, None):
            for code in codes:
                family = self.family_of(code, among)
                if family:
                    return family
        return None

    def question(self, element: Element, family: str | None) -> str:
        condition = self.families[family].condition if family else self.unknown_condition
        return (element.family_questions or {}).get(family, element.question).format(condition=condition)


def _need(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise QueryError(f"queries.toml: {where}: {message}")


def _text(value, where: str, key: str) -> str:
    _need(isinstance(value, str) and value.strip() != "", where, f"`{key}` must be a non-empty string")
    return value


def _question(value, where: str) -> str:
    question = _text(value, where, "question")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(question) if f is not None}
    except ValueError as exc:
        raise QueryError(f"queries.toml: {where}: bad question ({exc})") from None
    _need(fields <= {"condition"}, where, "a question may name only {condition}")
    return question


def _names(value, where: str, key: str, known) -> tuple[str, ...]:
    _need(isinstance(value, list) and all(isinstance(v, str) for v in value), where, f"`{key}` must be a list of names")
    unknown = [v for v in value if v not in known]
    _need(not unknown, where, f"`{key}` names unknown families {unknown}")
    return tuple(value)


def _option(spec, where: str, element_families: tuple[str, ...]) -> Option:
    _need(isinstance(spec, dict), where, "an option must be a table")
    _need(not set(spec) - _OPTION_KEYS, where, f"unknown keys {sorted(set(spec) - _OPTION_KEYS)}")
    label = _text(spec.get("label"), where, "label")
    codes = spec.get("codes", {})
    _need(isinstance(codes, dict) and all(isinstance(c, str) and c for c in codes.values()), where,
          "`codes` must map families to codes")
    stray = [f for f in codes if f not in element_families]
    _need(not stray, where, f"`codes` names families {stray} that are not in the element's `families`")
    keeps = spec.get("keeps", False)
    _need(isinstance(keeps, bool), where, "`keeps` must be true or false")
    _need(not (keeps and codes), where, "an option either keeps the code already coded or maps to codes, not both")
    families = _names(spec["families"], where, "families", element_families) if "families" in spec else None
    if label in (OTHER, UNDETERMINED):
        _need(not codes and not keeps and families is None, where,
              f"{label!r} maps to no code, keeps none and is offered for every card")
    return Option(label, dict(codes), keeps, families)


def _element(name: str, spec, families: dict[str, Family], queries: Queries) -> Element:
    where = f"[elements.{name}]"
    _need(isinstance(spec, dict), where, "must be a table")
    unknown = set(spec) - _ELEMENT_KEYS - _ELEMENT_OPTIONAL
    _need(not unknown, where, f"unknown keys {sorted(unknown)}")
    _need(not _ELEMENT_KEYS - set(spec), where, f"missing keys {sorted(_ELEMENT_KEYS - set(spec))}")
    question = _question(spec["question"], where)
    element_families = _names(spec["families"], where, "families", families)
    family_questions = spec.get("family_questions", {})
    _need(isinstance(family_questions, dict), where, "`family_questions` must map families to questions")
    _names(list(family_questions), where, "family_questions", element_families)
    family_questions = {f: _question(q, f"{where} family_questions.{f}") for f, q in family_questions.items()}
    raw_options = spec["options"]
    _need(isinstance(raw_options, list) and raw_options, where, "needs options")
    options = tuple(_option(o, f"{where} option {n + 1}", element_families) for n, o in enumerate(raw_options))
    labels = [o.label for o in options]
    _need(len(labels) == len(set(labels)), where, "option labels must be distinct")
    for required in (OTHER, UNDETERMINED):
        _need(required in labels, where, f"needs the option {required!r}")
    element = Element(name, question, element_families, options, {}, family_questions)
    example = spec["example"]
    _need(isinstance(example, dict) and not set(example) - _EXAMPLE_KEYS, where,
          f"`example` is a table of {sorted(_EXAMPLE_KEYS)}")
    current = _text(example.get("current"), where + " example", "current")
    answer = _text(example.get("answer"), where + " example", "answer")
    codes = [example["proposed"]] if example.get("proposed") else []
    family = queries.family_of_card(element, codes + [current])
    chosen = [o for o in element.options_for(family) if o.label == answer]
    _need(bool(chosen), where + " example", f"{answer!r} is not an option offered for this card")
    mapped = chosen[0].codes.get(queries.family_of(current, element_families))
    sets = mapped if mapped and mapped != current else None
    _need(example.get("sets") == sets, where + " example",
          f"answering {answer!r} for {current} sets {sets or 'no code'}, not {example.get('sets') or 'no code'}")
    return Element(name, question, element_families, options, dict(example), family_questions)


def parse_queries(data: dict) -> Queries:
    _need(isinstance(data, dict), "top level", "must be a table")
    _need(not set(data) - _TOP_KEYS, "top level", f"unknown keys {sorted(set(data) - _TOP_KEYS)}")
    _need(not _TOP_KEYS - set(data), "top level", f"missing keys {sorted(_TOP_KEYS - set(data))}")
    families = {}
    for name, spec in data["families"].items():
        where = f"[families.{name}]"
        _need(isinstance(spec, dict) and set(spec) == _FAMILY_KEYS, where, f"needs exactly {sorted(_FAMILY_KEYS)}")
        prefixes = spec["prefixes"]
        _need(isinstance(prefixes, list) and prefixes and all(isinstance(p, str) and p for p in prefixes), where,
              "`prefixes` must be a list of codes")
        families[name] = Family(name, tuple(prefixes), _text(spec["condition"], where, "condition"))
    order = data["order"]
    _need(isinstance(order, list) and all(isinstance(e, str) for e in order), "order", "must be a list of elements")
    _need(len(order) == len(set(order)), "order", "names an element twice")
    _need(set(order) == set(data["elements"]), "order",
          f"must name every element once (differs by {sorted(set(order) ^ set(data['elements']))})")
    queries = Queries(tuple(order), _text(data["unknown_condition"], "top level", "unknown_condition"), families, {})
    for name, spec in data["elements"].items():
        queries.elements[name] = _element(name, spec, families, queries)
    return queries


def load_queries(path: Path = QUERIES) -> Queries:
    """queries.toml, schema-checked (QueryError names the entry and the reason)."""
    return parse_queries(read_toml(path, QueryError))


@lru_cache(maxsize=1)
def queries() -> Queries:
    """The service's queries, loaded once."""
    return load_queries()

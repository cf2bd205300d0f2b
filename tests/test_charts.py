"""The chart corpus as a coder checks it: every full-length chart of fhir_fixtures/charts/ in,
exactly the cards it must produce out (card for card), and silence where it belongs. The corpus
covers every rule and every class of reading problem (fhir_fixtures/build_charts.py CLASSES);
`make accuracy` prints the per-rule scorecard of the same comparison."""
from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from service.rules import RULES, load_rules

from .support import ROOT

_spec = importlib.util.spec_from_file_location("accuracy", ROOT / "bench" / "accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)
build_charts = accuracy.build_charts

CHARTS = build_charts.load_all()


@pytest.fixture(scope="module")
def answer():
    return accuracy.client()


@pytest.mark.parametrize("chart", CHARTS, ids=[c["id"] for c in CHARTS])
def test_chart(answer, chart):
    response = answer(build_charts.build(chart))
    produced = Counter(accuracy.signature(c) for c in response["cards"])
    assert produced == accuracy.expected(chart), chart["about"]
    if not chart["expect"]:
        assert response["cards"] == []


def test_the_corpus_is_large_and_covers_every_rule_and_class():
    load_rules()
    assert len(CHARTS) >= 60
    assert sum(1 for c in CHARTS if not c["expect"]) >= 25
    fired = {e["rule"] for c in CHARTS for e in c["expect"]}
    assert fired == set(RULES), f"rules without a chart where they fire: {sorted(set(RULES) - fired)}"
    classes = Counter(name for c in CHARTS for name in c.get("classes", []))
    assert set(classes) == set(build_charts.CLASSES), set(build_charts.CLASSES) - set(classes)
    assert min(classes.values()) >= 3


def test_charts_are_full_length():
    for chart in CHARTS:
        texts = [n["text"] if isinstance(n, dict) else n for n in chart.get("notes", [])] + \
                [r.get("text", "") + r.get("conclusion", "") for r in chart.get("reports", [])]
        assert sum(len(t) for t in texts) >= 1000, chart["id"]


def test_the_scorecard_counts_what_the_tests_compare(answer):
    results = accuracy.evaluate(CHARTS[:5])
    card = accuracy.scorecard(results)
    assert card["charts"] == 5
    for rule, counts in card["rules"].items():
        assert counts.get("right", 0) + counts.get("wrong", 0) == counts.get("produced", 0)
        assert counts.get("right", 0) + counts.get("missed", 0) == counts.get("expected", 0)

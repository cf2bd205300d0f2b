"""The hook call's budget, and a record that needs no reading."""
from __future__ import annotations

import logging

from service.deadline import Deadline
from service.findings import gather_findings
from service.hook_request import parse_hook_request
from service.record import build_record
from service.rules import RuleContext, evaluate
from service.services import ENCOUNTER_SIGN

from .support import fresh, load_fixture

VIGNETTE = "vignettes/spl-specificity-fires-m43.10-c1-on-c2.json"


def test_past_the_deadline_the_answer_is_no_cards_logged_and_counted(make_app, caplog):
    app = make_app(hook_deadline=0.000001)
    body = fresh(load_fixture(VIGNETTE))
    with caplog.at_level(logging.WARNING):
        response = app.test_client().post("/cds-services/spine-coding-encounter-sign", json=body)
    assert response.status_code == 200 and response.get_json() == {"cards": []}
    assert f"hookInstance={body['hookInstance']}" in caplog.text and "deadline" in caplog.text
    assert app.test_client().get("/stats").get_json()["hookTimeouts"] == 1


def test_within_the_deadline_the_cards_come(make_app):
    app = make_app(hook_deadline=5)
    response = app.test_client().post("/cds-services/spine-coding-encounter-sign", json=fresh(load_fixture(VIGNETTE)))
    assert [c["extension"]["spine-coding-cds"]["rule"] for c in response.get_json()["cards"]] == ["SPL-SPECIFICITY"]
    response.close()
    stats = app.test_client().get("/stats").get_json()
    assert stats["cardsByRule"] == {"SPL-SPECIFICITY": 1} and stats["hookTimeouts"] == 0


class _NoReading:
    """A text reader that fails the test if the text is read."""

    def read(self, *args, **kwargs):
        raise AssertionError("the text was read for a record that needs no reading")


def test_a_record_without_spine_codes_or_orders_is_not_read(app):
    runtime = app.extensions["spine_cds"]
    body = fresh(load_fixture(VIGNETTE))
    body["prefetch"]["conditions"]["entry"][0]["resource"]["code"]["coding"][0]["code"] = "I10"
    record = build_record(parse_hook_request(body, ENCOUNTER_SIGN), None, Deadline(5))
    assert record.texts  # the record has notes and reports...
    findings = gather_findings(record, _NoReading(), runtime.value_sets, runtime.terminology)
    assert evaluate(findings, RuleContext(runtime.terminology, runtime.value_sets, "encounter-sign")) == []

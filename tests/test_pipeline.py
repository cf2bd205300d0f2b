"""The pipeline without a request: the service, the CLI and the audit run the same function, with
every input passed in (service/runtime.py builds the runtime from settings, pipeline.Call says how
the call is answered). No Flask application, no request context, no store."""
from __future__ import annotations

import flask
import pytest

from service.config import Settings
from service.pipeline import Answer, Call, answer_hook
from service.runtime import build_runtime
from service.services import SERVICES

from .support import fresh, load_fixture

ENCOUNTER_SIGN = "encounter-sign_c1-c2-slip_coded-m43.10.json"


@pytest.fixture(scope="module")
def bare_runtime():
    return build_runtime(Settings.from_env(overrides={"log_level": "ERROR"}), store=None)


def _comparable(cards: list[dict]) -> list[dict]:
    """The cards without what differs per call (uuids)."""
    out = []
    for card in cards:
        card = {k: v for k, v in card.items() if k != "uuid"}
        card["suggestions"] = [{k: v for k, v in s.items() if k != "uuid"} for s in card.get("suggestions", [])]
        out.append(card)
    return out


def test_a_runtime_without_store_answers_outside_any_request_context(bare_runtime):
    assert not flask.has_app_context() and not flask.has_request_context()
    service = SERVICES["spine-coding-encounter-sign"]
    answer = answer_hook(bare_runtime, service, fresh(load_fixture(ENCOUNTER_SIGN)),
                         Call("https://cds.example.org/base/", origin=None, screen=False))
    assert isinstance(answer, Answer) and not answer.timed_out
    assert answer.cards, "the fixture is a slip coded M43.10: it gets a specificity card"
    for card in answer.cards:
        assert card["source"]["url"].startswith("https://cds.example.org/base/rules/")
    key = bare_runtime.catalogue.contract["extension_key"]
    counted = {(c["extension"][key]["rule"], c["source"]["topic"]["code"]) for c in answer.cards}
    assert set(answer.shown) == counted and sum(answer.shown.values()) == len(answer.cards)


def test_the_http_service_gives_the_same_cards_as_the_bare_pipeline(bare_runtime, client):
    body = load_fixture(ENCOUNTER_SIGN)
    served = client.post("/cds-services/spine-coding-encounter-sign", json=fresh(body)).get_json()["cards"]
    bare = answer_hook(bare_runtime, SERVICES["spine-coding-encounter-sign"], fresh(body),
                       Call("http://localhost/", origin=None, screen=False)).cards
    assert served and _comparable(served) == _comparable(bare)


def test_a_call_with_origin_none_records_nothing(app):
    runtime = app.extensions["spine_cds"]
    answer = answer_hook(runtime, SERVICES["spine-coding-encounter-sign"], fresh(load_fixture(ENCOUNTER_SIGN)),
                         Call("http://localhost/", origin=None))
    assert answer.cards
    assert runtime.store.count("issued_cards") == 0


def test_a_call_recorded_as_ehr_writes_its_cards(app):
    runtime = app.extensions["spine_cds"]
    answer = answer_hook(runtime, SERVICES["spine-coding-encounter-sign"], fresh(load_fixture(ENCOUNTER_SIGN)),
                         Call("http://localhost/"))  # no defer: written before answer_hook returns
    rows = runtime.store.issued_rows()
    assert {r["card_uuid"] for r in rows} == {c["uuid"] for c in answer.cards}
    assert {r["origin"] for r in rows} == {"ehr"}


def test_a_deadline_hit_is_an_answer_that_says_so(make_app):
    app = make_app(hook_deadline=0.000001)
    runtime = app.extensions["spine_cds"]
    answer = answer_hook(runtime, SERVICES["spine-coding-encounter-sign"], fresh(load_fixture(ENCOUNTER_SIGN)),
                         Call("http://localhost/"))
    assert answer.timed_out and answer.response == {"cards": []}
    assert runtime.store.count("hook_timeouts") == 1

"""Analytics for CDI leads: the figures follow the cards issued and the feedback received."""
from __future__ import annotations

import csv
import io
import uuid

import pytest

from .support import fresh, load_fixture

SERVICE = "/cds-services/spine-coding-encounter-sign"
TWO_CARDS = "vignettes/rad-ra-sequencing-fires-ra-not-coded.json"  # one card, one suggestion
SPECIFICITY = "vignettes/spl-specificity-fires-m43.10-c1-on-c2.json"


def _cards(client, vignette):
    response = client.post(SERVICE, json=fresh(load_fixture(vignette)))
    response.close()
    return response.get_json()["cards"]


def _feedback(client, card, outcome, **extra):
    item = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": "2026-11-21T10:00:00Z", **extra}
    assert client.post(SERVICE + "/feedback", json={"feedback": [item]}).status_code == 200


@pytest.fixture
def traffic(make_app):
    app = make_app(silent_rules="RAD-RA-SEQUENCING")
    client = app.test_client()
    shown = [_cards(client, SPECIFICITY)[0] for _ in range(4)]
    _cards(client, TWO_CARDS)  # silent: recorded, not shown
    _feedback(client, shown[0], "accepted", acceptedSuggestions=[{"id": shown[0]["suggestions"][0]["uuid"]}])
    _feedback(client, shown[1], "overridden", overrideReason={"reason": {
        "code": "provider-will-be-queried", "system": "urn:spine-coding-cds:override-reason"}})
    _feedback(client, shown[2], "overridden")
    return client


def test_the_page_shows_the_figures(traffic):
    page = traffic.get("/analytics")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<b id="issued">4</b>' in html and '<b id="accepted">1</b>' in html
    assert '<b id="overridden">2</b>' in html and '<b id="unanswered">1</b>' in html
    assert '<b id="silent">1</b>' in html
    assert "provider-will-be-queried" in html and "(no reason given)" in html
    assert "<script" not in html and "http" not in html.split("<body>")[1].split("action")[0]


def test_csv_export(traffic):
    response = traffic.get("/analytics.csv")
    assert response.mimetype == "text/csv"
    rows = {r["rule"]: r for r in csv.DictReader(io.StringIO(response.get_data(as_text=True)))}
    assert rows["SPL-SPECIFICITY"]["issued"] == "4" and rows["SPL-SPECIFICITY"]["acceptance_rate"] == "0.25"
    assert rows["RAD-RA-SEQUENCING"]["silent"] == "1" and rows["RAD-RA-SEQUENCING"]["issued"] == "0"


def test_filters(traffic):
    assert '<b id="issued">0</b>' in traffic.get("/analytics?to=2020-01-01").get_data(as_text=True)
    assert '<b id="issued">4</b>' in traffic.get("/analytics?from=2020-01-01").get_data(as_text=True)
    other = traffic.get("/analytics?service=spine-coding-order-sign").get_data(as_text=True)
    assert '<b id="issued">0</b>' in other


@pytest.mark.parametrize("query", ["from=yesterday", "to=2026-13-40", "service=nope"])
def test_bad_filters_are_400_json(traffic, query):
    response = traffic.get(f"/analytics?{query}")
    assert response.status_code == 400 and response.get_json()["resourceType"] == "OperationOutcome"


def test_analytics_need_a_token_when_authentication_is_on(make_app, tmp_path):
    (tmp_path / "k.json").write_text('{"keys": []}')
    client = make_app(trusted_issuers=[{"iss": "https://ehr.test", "jwks_file": str(tmp_path / "k.json")}],
                      public_base_url="https://cds.test").test_client()
    assert client.get("/analytics").status_code == 401
    assert client.get("/analytics.csv").status_code == 401


def test_unknown_card_feedback_is_not_counted_against_rules(traffic):
    traffic.post(SERVICE + "/feedback", json={"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                                                           "outcomeTimestamp": "2026-11-21T10:00:00Z"}]})
    assert '<b id="overridden">2</b>' in traffic.get("/analytics").get_data(as_text=True)


def test_the_same_figures_on_each_database(database_url):
    from service import create_app

    app = create_app({"database_url": database_url})
    client = app.test_client()
    shown = [_cards(client, SPECIFICITY)[0] for _ in range(2)]
    _feedback(client, shown[0], "accepted", acceptedSuggestions=[{"id": shown[0]["suggestions"][0]["uuid"]}])
    html = client.get("/analytics").get_data(as_text=True)
    assert '<b id="issued">2</b>' in html and '<b id="accepted">1</b>' in html
    assert "SPL-SPECIFICITY</td><td>1</td><td>1</td>" in html  # suggestion 1 chosen once
    app.extensions["spine_cds"].store.engine.dispose()

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


# ------------------------------------------------------------ playground traffic (issue 12)
def _playground_run(client, vignette):
    page = client.post("/playground/run", data={"vignette": vignette, "service": ""}).get_data(as_text=True)
    assert 'id="result"' in page
    return page


def _figures(client, query=""):
    html = client.get(f"/analytics{query}").get_data(as_text=True)
    kpis = {name: int(n) for name, n in __import__("re").findall(r'<b id="(\w+)">(\d+)</b>', html)}
    rows = {r["rule"]: r for r in csv.DictReader(io.StringIO(client.get(f"/analytics.csv{query}").get_data(as_text=True)))}
    stats = client.get(f"/stats{query}").get_json()
    return kpis, rows, stats, html


def test_playground_runs_do_not_move_the_figures_unless_asked(database_url):
    import re

    from service import create_app

    app = create_app({"database_url": database_url, "silent_rules": "RAD-RA-SEQUENCING"})
    client = app.test_client()
    shown = _cards(client, SPECIFICITY)[0]
    _feedback(client, shown, "overridden", overrideReason={"reason": {
        "code": "provider-will-be-queried", "system": "urn:spine-coding-cds:override-reason"}})
    before = _figures(client)
    assert before[0]["issued"] == 1 and before[0]["overridden"] == 1
    # playground runs: shown cards, a silent one, and feedback on a playground card
    page = _playground_run(client, SPECIFICITY)
    _playground_run(client, SPECIFICITY)
    _playground_run(client, TWO_CARDS)
    card = re.search(r'name="card" value="([^"]+)"', page).group(1)
    suggestion = re.search(r'name="suggestion" value="([^"]+)"', page).group(1)
    assert client.post("/playground/feedback", data={"service": "spine-coding-encounter-sign", "card": card,
                                                     "suggestion": suggestion, "outcome": "accepted"}).status_code == 302
    after = _figures(client)
    assert after[0] == before[0] and after[1] == before[1]
    assert {k: v for k, v in after[2].items() if k != "writeQueue"} == {k: v for k, v in before[2].items()
                                                                        if k != "writeQueue"}
    assert after[2]["origins"] == ["ehr"] and after[2]["feedback"] == {"overridden": 1}
    assert "3 cards of playground runs left out" in after[3] and "?include=playground" in after[3]
    # asked for, they are counted
    kpis, rows, stats, html = _figures(client, "?include=playground")
    assert kpis["issued"] == 3 and kpis["accepted"] == 1 and kpis["overridden"] == 1 and kpis["silent"] == 1
    assert rows["SPL-SPECIFICITY"]["issued"] == "3" and rows["RAD-RA-SEQUENCING"]["silent"] == "1"
    assert stats["cardsIssued"] == 3 and stats["cardsByRule"] == {"SPL-SPECIFICITY": 3}
    assert stats["silentCardsByRule"] == {"RAD-RA-SEQUENCING": 1}
    assert stats["feedback"] == {"overridden": 1, "accepted": 1} and stats["origins"] == ["ehr", "playground"]
    assert 'name="include" value="playground" checked' in html and "left out" not in html
    # the CSV link of the page keeps the choice
    assert 'href="/analytics.csv?include=playground"' in html
    app.extensions["spine_cds"].store.engine.dispose()


def test_playground_timeouts_are_left_out_of_the_stats(app):
    store = app.extensions["spine_cds"].store
    store.record_timeout("spine-coding-encounter-sign", "h1", 1200.0)
    store.record_timeout("spine-coding-encounter-sign", "h2", 1300.0, origin="playground")
    client = app.test_client()
    assert client.get("/stats").get_json()["hookTimeouts"] == 1
    assert client.get("/stats?include=playground").get_json()["hookTimeouts"] == 2


@pytest.mark.parametrize("path", ["/analytics", "/analytics.csv", "/stats"])
@pytest.mark.parametrize("value", ["everything", "playground,ehr", "", "Playground"])
def test_include_names_only_playground(client, path, value):
    assert client.get(f"{path}?include=playground&include=playground").status_code == 200
    response = client.get(f"{path}?include={value}")
    body = response.get_json()
    assert response.status_code == 400 and body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == ["include"] and "playground" in body["issue"][0]["diagnostics"]


def test_a_database_from_before_origins_is_upgraded_in_place(database_url):
    """issued_cards and hook_timeouts as they were before the origin column: the column is added in
    place, the old rows count as EHR traffic."""
    import sqlalchemy

    from service import create_app

    engine = sqlalchemy.create_engine(database_url)
    stamp = "TIMESTAMP WITH TIME ZONE" if engine.dialect.name == "postgresql" else "DATETIME"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(
            "CREATE TABLE issued_cards (card_uuid VARCHAR(36) PRIMARY KEY, rule VARCHAR(64) NOT NULL, "
            "kind VARCHAR(32) NOT NULL, indicator VARCHAR(16) NOT NULL, service_id VARCHAR(64) NOT NULL, "
            "hook VARCHAR(64) NOT NULL, hook_instance VARCHAR(64) NOT NULL, suggestion_uuids TEXT NOT NULL, "
            f"proposed_codes TEXT NOT NULL, issued_at {stamp} NOT NULL, silent BOOLEAN NOT NULL DEFAULT false, "
            "suppression_key VARCHAR(64), window_key VARCHAR(64), suppressed BOOLEAN NOT NULL DEFAULT false)"))
        conn.execute(sqlalchemy.text(
            "INSERT INTO issued_cards VALUES ('u1', 'SPL-SPECIFICITY', 'specificity', 'warning', "
            "'spine-coding-encounter-sign', 'encounter-sign', 'i', '[]', '[]', '2026-01-01 00:00:00+00:00', "
            "false, NULL, NULL, false)"))
        serial = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
        conn.execute(sqlalchemy.text(
            f"CREATE TABLE hook_timeouts (id {serial} PRIMARY KEY, service_id VARCHAR(64) NOT NULL, "
            f"hook_instance VARCHAR(64) NOT NULL, elapsed_ms INTEGER NOT NULL, at {stamp} NOT NULL)"))
        conn.execute(sqlalchemy.text("INSERT INTO hook_timeouts (service_id, hook_instance, elapsed_ms, at) "
                                     "VALUES ('s', 'h', 1500, '2026-01-01 00:00:00+00:00')"))
    engine.dispose()
    app = create_app({"database_url": database_url})
    store = app.extensions["spine_cds"].store
    assert [r["origin"] for r in store.issued_rows()] == ["ehr"]
    client = app.test_client()
    _playground_run(client, SPECIFICITY)
    stats = client.get("/stats").get_json()
    assert stats["cardsByRule"] == {"SPL-SPECIFICITY": 1} and stats["hookTimeouts"] == 1
    assert client.get("/stats?include=playground").get_json()["cardsByRule"] == {"SPL-SPECIFICITY": 2}
    assert '<b id="issued">1</b>' in client.get("/analytics").get_data(as_text=True)
    store.engine.dispose()

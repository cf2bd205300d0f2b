"""Silent mode: a new rule runs and is counted before it interrupts anyone."""
from __future__ import annotations

import pytest
import sqlalchemy

from service.config import ConfigError
from service.store import Store

from .support import fresh, load_fixture

VIGNETTE = "vignettes/spl-specificity-fires-m43.10-c1-on-c2.json"
SERVICE = "/cds-services/spine-coding-encounter-sign"


def _call(app):
    response = app.test_client().post(SERVICE, json=fresh(load_fixture(VIGNETTE)))
    response.close()
    return response.get_json()


@pytest.mark.parametrize("silent", ["SPL-SPECIFICITY", "*"])
def test_a_silent_rule_shows_nothing_and_is_recorded(make_app, silent):
    app = make_app(silent_rules=silent)
    assert _call(app) == {"cards": []}
    stats = app.test_client().get("/stats").get_json()
    assert stats["silentCardsByRule"] == {"SPL-SPECIFICITY": 1} and stats["cardsByRule"] == {}


def test_other_rules_stay_live(make_app):
    app = make_app(silent_rules="RAD-DOCS")
    assert [c["extension"]["spine-coding-cds"]["rule"] for c in _call(app)["cards"]] == ["SPL-SPECIFICITY"]
    assert app.test_client().get("/stats").get_json()["cardsByRule"] == {"SPL-SPECIFICITY": 1}


def test_an_unknown_silent_rule_is_a_configuration_error(make_app):
    with pytest.raises(ConfigError, match="no rule NOPE"):
        make_app(silent_rules="NOPE")


def test_a_database_from_before_silent_mode_gets_the_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(
            "CREATE TABLE issued_cards (card_uuid VARCHAR(36) PRIMARY KEY, rule VARCHAR(64) NOT NULL, "
            "kind VARCHAR(32) NOT NULL, indicator VARCHAR(16) NOT NULL, service_id VARCHAR(64) NOT NULL, "
            "hook VARCHAR(64) NOT NULL, hook_instance VARCHAR(64) NOT NULL, suggestion_uuids TEXT NOT NULL, "
            "proposed_codes TEXT NOT NULL, issued_at DATETIME NOT NULL)"))
        conn.execute(sqlalchemy.text("INSERT INTO issued_cards VALUES ('u1', 'R', 'k', 'info', 's', 'h', 'i', '[]', "
                                     "'[]', '2026-01-01 00:00:00')"))
    store = Store(url)
    store.create_schema()
    rows = store.issued_rows()
    assert rows[0]["card_uuid"] == "u1" and rows[0]["silent"] is False

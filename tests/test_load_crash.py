"""Load and crash: 8 clients mixing hook calls and feedback against `spine-cds serve` (2 workers),
on SQLite and on PostgreSQL; one worker is killed with SIGKILL mid-run and the server restarted
once. Every feedback acknowledged with 200 must be in the database afterwards, no 5xx outside the
kill, and the database intact. The run lasts SPINE_CDS_TEST_LOAD_SECONDS (12 s in the suite,
60 s in `make harden`). Figures go to test-artifacts/load-crash-<backend>.json.
"""
from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
import requests
import sqlalchemy

from service.services import service_for_hook

from .served import Gunicorn
from .support import FIXTURES, ROOT

pytestmark = pytest.mark.served
SECONDS = float(os.environ.get("SPINE_CDS_TEST_LOAD_SECONDS", "12"))
CLIENTS = 8
VIGNETTES = sorted((FIXTURES / "vignettes").glob("*.json"))


def _service_path(body: dict) -> str:
    return service_for_hook(body["hook"]).id


class Load:
    def __init__(self, server: Gunicorn):
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.server_errors_outside_kill = 0
        self.errors_during_disruption = 0
        self.errors_outside_disruption = 0
        self.acknowledged: list[str] = []  # card uuids of feedback answered 200 (one item each)
        self.disrupted = threading.Event()  # set while a worker is being killed or the server restarts
        self.cards: list[tuple[str, str]] = []

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        while not self.stop.is_set():
            try:
                if self.cards and rng.random() < 0.4:
                    self._feedback(session, rng)
                else:
                    self._hook(session, rng)
            except requests.RequestException:
                with self.lock:
                    if self.disrupted.is_set():
                        self.errors_during_disruption += 1
                    else:
                        self.errors_outside_disruption += 1  # reported, e.g. a request cut by the kill
                time.sleep(0.05)

    def _hook(self, session, rng) -> None:
        body = json.loads(rng.choice(VIGNETTES).read_text())
        body["hookInstance"] = str(uuid.uuid4())
        service = _service_path(body)
        response = session.post(f"{self.server.url}/cds-services/{service}", json=body, timeout=30)
        self._count(response)
        if response.status_code == 200:
            for card in response.json()["cards"]:
                with self.lock:
                    self.cards.append((service, card["uuid"]))

    def _feedback(self, session, rng) -> None:
        with self.lock:
            service, card = rng.choice(self.cards)
        if rng.random() < 0.1:
            card = str(uuid.uuid4())  # a card we never issued: stored and flagged
        item = {"card": card, "outcome": "overridden",
                "overrideReason": {"reason": {"code": "already-addressed",
                                              "system": "urn:spine-coding-cds:override-reason"}},
                "outcomeTimestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                "_marker": str(uuid.uuid4())}
        # the marker makes every item distinct (the timestamp alone could repeat)
        item["overrideReason"]["userComment"] = item.pop("_marker")
        response = session.post(f"{self.server.url}/cds-services/{service}/feedback",
                                json={"feedback": [item]}, timeout=30)
        self._count(response)
        if response.status_code == 200 and response.json()["stored"] == 1:
            with self.lock:
                self.acknowledged.append(item["overrideReason"]["userComment"])

    def _count(self, response) -> None:
        with self.lock:
            self.requests += 1
            if response.status_code >= 500 and not self.disrupted.is_set():
                self.server_errors_outside_kill += 1


def _run(server: Gunicorn, count_feedback) -> dict:
    load = Load(server)
    threads = [threading.Thread(target=load.client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(SECONDS / 3)
    victim = server.workers_pids()[0]
    load.disrupted.set()
    os.kill(victim, signal.SIGKILL)
    time.sleep(1.0)
    load.disrupted.clear()
    time.sleep(SECONDS / 3)
    load.disrupted.set()
    server.restart()
    load.disrupted.clear()
    time.sleep(SECONDS / 3)
    load.stop.set()
    for t in threads:
        t.join(timeout=60)
    server.stop()
    in_database = count_feedback(load.acknowledged)
    return {"seconds": SECONDS, "clients": CLIENTS, "requests": load.requests,
            "server_errors_outside_kill": load.server_errors_outside_kill,
            "connection_errors_during_kill_or_restart": load.errors_during_disruption,
            "connection_errors_outside": load.errors_outside_disruption,
            "feedback_acknowledged": len(load.acknowledged), "feedback_in_database": in_database,
            "worker_killed": victim}


def _write(name: str, figures: dict) -> None:
    out = ROOT / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / f"load-crash-{name}.json").write_text(json.dumps(figures, indent=2))


def _check(figures: dict) -> None:
    assert figures["requests"] > 50
    assert figures["server_errors_outside_kill"] == 0
    assert figures["feedback_acknowledged"] > 0
    assert figures["feedback_in_database"] == figures["feedback_acknowledged"]
    assert figures["integrity"] == "ok"


def test_load_and_crash_on_sqlite(tmp_path):
    server = Gunicorn(tmp_path)
    database = tmp_path / "spine-cds.sqlite3"

    def count(markers: list[str]) -> int:
        engine = sqlalchemy.create_engine(f"sqlite:///{database}")
        with engine.connect() as conn:
            stored = {row[0] for row in conn.execute(sqlalchemy.text("SELECT user_comment FROM feedback"))}
        engine.dispose()
        return len(set(markers) & stored)

    figures = _run(server, count)
    engine = sqlalchemy.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        figures["integrity"] = conn.execute(sqlalchemy.text("PRAGMA integrity_check")).scalar_one()
    engine.dispose()
    _write("sqlite", figures)
    _check(figures)


@pytest.mark.postgres
def test_load_and_crash_on_postgresql(tmp_path, postgres_url):
    engine, schema, url = postgres_url
    server = Gunicorn(tmp_path, env={"SPINE_CDS_DATABASE_URL": url})

    def count(markers: list[str]) -> int:
        with engine.connect() as conn:
            stored = {row[0] for row in conn.execute(sqlalchemy.text(f'SELECT user_comment FROM "{schema}".feedback'))}
        return len(set(markers) & stored)

    figures = _run(server, count)
    with engine.connect() as conn:
        # every row readable, the unique index holding: no duplicate dedupe keys
        rows, keys = conn.execute(sqlalchemy.text(
            f'SELECT count(*), count(DISTINCT dedupe_key) FROM "{schema}".feedback')).one()
        issued = conn.execute(sqlalchemy.text(f'SELECT count(*) FROM "{schema}".issued_cards')).scalar_one()
    figures["integrity"] = "ok" if rows == keys and issued > 0 else f"rows {rows} keys {keys} issued {issued}"
    _write("postgresql", figures)
    _check(figures)

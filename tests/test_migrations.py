"""Schema migrations (issue 13): Alembic revisions in service/migrations, run at start
(SPINE_CDS_MIGRATE=auto) or by `spine-cds migrate`, on SQLite and PostgreSQL.

The databases of the releases before migrations are made here from a frozen copy of the DDL that
`metadata.create_all` emitted at git commit 28657c3 (the previous release), and of the one before
issue 12 (no `origin` on issued_cards and hook_timeouts), never from service/store.py.
"""
from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service import create_app, migrations
from service.cli import main
from service.config import ConfigError
from service.store import MIGRATION_LOCK_KEY, Store, metadata

from .support import ROOT
from .test_suppression import RULE, _accept, _call, _card, _request, _rules

HEAD = "0002_suppression_origin"

# ---------------------------------------------------------------- the releases before migrations
# `CREATE TABLE` as metadata.create_all emitted it at 28657c3, {serial} and {stamp} per dialect.
PREVIOUS_RELEASE = [
    "CREATE TABLE feedback (id {serial} NOT NULL, dedupe_key VARCHAR(64) NOT NULL, service_id VARCHAR(64) NOT NULL, "
    "card_uuid VARCHAR(64) NOT NULL, known_card BOOLEAN NOT NULL, rule VARCHAR(64), outcome VARCHAR(16) NOT NULL, "
    "accepted_suggestions TEXT NOT NULL, override_system TEXT, override_code TEXT, override_display TEXT, "
    "user_comment TEXT, outcome_timestamp VARCHAR(64) NOT NULL, outcome_at {stamp}, received_at {stamp} NOT NULL, "
    "PRIMARY KEY (id), UNIQUE (dedupe_key))",
    "CREATE INDEX ix_feedback_card_uuid ON feedback (card_uuid)",
    "CREATE TABLE hook_timeouts (id {serial} NOT NULL, service_id VARCHAR(64) NOT NULL, hook_instance VARCHAR(64) "
    "NOT NULL, elapsed_ms INTEGER NOT NULL, at {stamp} NOT NULL, origin VARCHAR(16) DEFAULT 'ehr' NOT NULL, "
    "PRIMARY KEY (id))",
    "CREATE TABLE issued_cards (card_uuid VARCHAR(36) NOT NULL, rule VARCHAR(64) NOT NULL, kind VARCHAR(32) NOT NULL, "
    "indicator VARCHAR(16) NOT NULL, service_id VARCHAR(64) NOT NULL, hook VARCHAR(64) NOT NULL, hook_instance "
    "VARCHAR(64) NOT NULL, suggestion_uuids TEXT NOT NULL, proposed_codes TEXT NOT NULL, issued_at {stamp} NOT NULL, "
    "silent BOOLEAN DEFAULT false NOT NULL, suppression_key VARCHAR(64), window_key VARCHAR(64), suppressed BOOLEAN "
    "DEFAULT false NOT NULL, origin VARCHAR(16) DEFAULT 'ehr' NOT NULL, PRIMARY KEY (card_uuid))",
    "CREATE INDEX ix_issued_cards_issued_at ON issued_cards (issued_at)",
    "CREATE INDEX ix_issued_cards_rule ON issued_cards (rule)",
    "CREATE TABLE jwt_replay (token_key VARCHAR(64) NOT NULL, expires_at {stamp} NOT NULL, PRIMARY KEY (token_key))",
    "CREATE INDEX ix_jwt_replay_expires_at ON jwt_replay (expires_at)",
    "CREATE TABLE maintenance_runs (name VARCHAR(32) NOT NULL, last_run_at {stamp} NOT NULL, PRIMARY KEY (name))",
    "CREATE TABLE service_secrets (name VARCHAR(64) NOT NULL, value TEXT NOT NULL, created_at {stamp} NOT NULL, "
    "PRIMARY KEY (name))",
    "CREATE TABLE suppressions (id {serial} NOT NULL, suppression_key VARCHAR(64) NOT NULL, window_key VARCHAR(64), "
    "rule VARCHAR(64) NOT NULL, card_uuid VARCHAR(64) NOT NULL, outcome VARCHAR(16) NOT NULL, suppressed_at {stamp} "
    "NOT NULL, PRIMARY KEY (id))",
    "CREATE INDEX ix_suppressions_key ON suppressions (suppression_key)",
]
ISSUE_12_ORIGIN = ", origin VARCHAR(16) DEFAULT 'ehr' NOT NULL"
# Before issue 12: no origin on issued_cards nor hook_timeouts (and no index on the rule yet).
BEFORE_ISSUE_12 = [ddl.replace(ISSUE_12_ORIGIN, "") for ddl in PREVIOUS_RELEASE if "ix_issued_cards_rule" not in ddl]

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)

ISSUED = [
    {"card_uuid": "card-ehr-1", "rule": RULE, "kind": "specificity", "indicator": "warning",
     "service_id": "spine-coding-encounter-sign", "hook": "encounter-sign", "hook_instance": "h-1",
     "suggestion_uuids": '["s-1"]', "proposed_codes": '["M43.11"]', "issued_at": T0, "silent": False,
     "suppression_key": "k-ehr", "window_key": "w-1", "suppressed": False, "origin": "ehr"},
    {"card_uuid": "card-play-1", "rule": RULE, "kind": "specificity", "indicator": "warning",
     "service_id": "spine-coding-encounter-sign", "hook": "encounter-sign", "hook_instance": "h-2",
     "suggestion_uuids": '["s-2"]', "proposed_codes": '["M43.11"]', "issued_at": T0, "silent": False,
     "suppression_key": "k-play", "window_key": "w-2", "suppressed": False, "origin": "playground"},
]
FEEDBACK = [
    {"dedupe_key": "d-1", "service_id": "spine-coding-encounter-sign", "card_uuid": "card-ehr-1", "known_card": True,
     "rule": RULE, "outcome": "accepted", "accepted_suggestions": '["s-1"]', "override_system": None,
     "override_code": None, "override_display": None, "user_comment": None,
     "outcome_timestamp": "2026-11-20T10:05:00Z", "outcome_at": T0 + timedelta(minutes=5),
     "received_at": T0 + timedelta(minutes=6)},
    {"dedupe_key": "d-2", "service_id": "spine-coding-encounter-sign", "card_uuid": "card-play-1", "known_card": True,
     "rule": RULE, "outcome": "overridden", "accepted_suggestions": "[]",
     "override_system": "urn:spine-coding-cds:override-reason", "override_code": "provider-will-be-queried",
     "override_display": "Provider will be queried", "user_comment": "a comment, kept as it was",
     "outcome_timestamp": "2026-11-20T10:07:00Z", "outcome_at": T0 + timedelta(minutes=7),
     "received_at": T0 + timedelta(minutes=8)},
    {"dedupe_key": "d-3", "service_id": "spine-coding-order-sign", "card_uuid": "card-never-issued", "known_card": False,
     "rule": None, "outcome": "overridden", "accepted_suggestions": "[]", "override_system": None,
     "override_code": None, "override_display": None, "user_comment": None,
     "outcome_timestamp": "not a date", "outcome_at": None, "received_at": T0 + timedelta(minutes=9)},
]
SUPPRESSIONS = [
    {"suppression_key": "k-ehr", "window_key": "w-1", "rule": RULE, "card_uuid": "card-ehr-1", "outcome": "accepted",
     "suppressed_at": T0 + timedelta(minutes=6)},
    {"suppression_key": "k-play", "window_key": "w-2", "rule": RULE, "card_uuid": "card-play-1",
     "outcome": "overridden", "suppressed_at": T0 + timedelta(minutes=8)},
]
OTHERS = {
    "hook_timeouts": [{"service_id": "spine-coding-order-sign", "hook_instance": "h-3", "elapsed_ms": 1200, "at": T0,
                       "origin": "ehr"}],
    "service_secrets": [{"name": "suppression-hash-key", "value": "00" * 32, "created_at": T0}],
    "maintenance_runs": [{"name": "purge", "last_run_at": T0}],
    "jwt_replay": [{"token_key": "t" * 64, "expires_at": T0 + timedelta(days=3650)}],
}


def _engine(url):
    return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)


def _insert(conn, name: str, rows: list[dict]) -> None:
    def kind(key):
        values = [row[key] for row in rows if row[key] is not None]
        if values and isinstance(values[0], datetime):
            return sqlalchemy.DateTime(timezone=True)
        if values and isinstance(values[0], bool):
            return sqlalchemy.Boolean()
        return None
    table = sqlalchemy.table(name, *(sqlalchemy.column(key, kind(key)) for key in rows[0]))
    conn.execute(sqlalchemy.insert(table), rows)


def _old_database(url, ddl=PREVIOUS_RELEASE) -> None:
    """A database as a release before migrations left it: its tables (no alembic_version), with rows."""
    engine = _engine(url)
    postgres = engine.dialect.name == "postgresql"
    stamp, serial = ("TIMESTAMP WITH TIME ZONE", "SERIAL") if postgres else ("DATETIME", "INTEGER")
    with engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement.format(stamp=stamp, serial=serial))
        issue_12 = ddl is PREVIOUS_RELEASE
        _insert(conn, "issued_cards", [row if issue_12 else {k: v for k, v in row.items() if k != "origin"}
                                       for row in ISSUED])
        _insert(conn, "feedback", FEEDBACK)
        _insert(conn, "suppressions", SUPPRESSIONS)
        for name, rows in OTHERS.items():
            _insert(conn, name, rows if issue_12 else [{k: v for k, v in r.items() if k != "origin"} for r in rows])
    engine.dispose()


def _utc(value):
    """Datetimes as UTC without a zone (SQLite gives them naive, PostgreSQL aware)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def _rows(url, name: str, order: str) -> list[dict]:
    """The rows of a table at the head, read through its typed Table (SQLite keeps no types)."""
    engine = _engine(url)
    table = metadata.tables[name]
    with engine.connect() as conn:
        rows = [{k: _utc(v) for k, v in r._mapping.items()}
                for r in conn.execute(sqlalchemy.select(table).order_by(table.c[order]))]
    engine.dispose()
    return rows


def _expected(rows: list[dict]) -> list[dict]:
    return [{k: _utc(v) for k, v in row.items()} for row in rows]


def _diff(url) -> list:
    """What Alembic's autogenerate finds between service/store.py's metadata and the database."""
    engine = _engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    return diff


def _versions(url) -> tuple[list[str], list[str]]:
    """(the rows of alembic_version, the schemas holding an alembic_version table visible here)."""
    engine = _engine(url)
    with engine.connect() as conn:
        versions = [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
        if engine.dialect.name == "postgresql":
            where = [r[0] for r in conn.exec_driver_sql(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version' "
                "AND table_schema = current_schema()")]
        else:
            where = ["main"]
    engine.dispose()
    return versions, where


def _tables(url) -> set[str]:
    engine = _engine(url)
    with engine.connect() as conn:
        names = set(sqlalchemy.inspect(conn).get_table_names())
    engine.dispose()
    return names


def _columns(url, table: str) -> set[str]:
    engine = _engine(url)
    with engine.connect() as conn:
        names = {c["name"] for c in sqlalchemy.inspect(conn).get_columns(table)}
    engine.dispose()
    return names


def _env(url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_CDS_") or k.startswith("SPINE_CDS_TEST")}
    env["SPINE_CDS_DATABASE_URL"] = url
    env["SPINE_CDS_TABULAR_EFFECTIVE"] = os.environ.get("SPINE_CDS_TABULAR_EFFECTIVE", "")
    return env


def _migrate_subprocess(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", "migrate", *args], cwd=ROOT, env=_env(url),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def apps():
    made = []

    def build(url, **settings):
        app = create_app({"database_url": url, **settings})
        made.append(app)
        return app

    yield build
    for app in made:
        app.extensions["spine_cds"].store.engine.dispose()


# ------------------------------------------------------------------ (a) an empty database
def test_an_empty_database_is_made_at_the_head_and_agrees_with_the_models(database_url):
    store = Store(database_url)
    store.create_schema()
    assert store.schema_revision() == (migrations.HEAD, HEAD) and migrations.head() == HEAD
    assert _tables(database_url) == set(metadata.tables) | {"alembic_version"}
    assert _diff(database_url) == []
    versions, where = _versions(database_url)
    assert versions == [HEAD] and len(where) == 1  # in the connection's own schema (search_path)
    store.engine.dispose()


def test_at_the_head_a_start_costs_the_version_query_and_runs_no_migration(database_url, caplog):
    Store(database_url).create_schema()
    caplog.clear()  # the first start migrated (logged when an earlier test left INFO on): only the second counts
    statements = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", seen)
    try:
        with caplog.at_level(logging.INFO):
            store = Store(database_url)
            store.create_schema()
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", seen)
    store.engine.dispose()
    queries = [s for s in statements if not s.lstrip().upper().startswith(("PRAGMA", "SELECT PG_CATALOG.VERSION",
                                                                           "SELECT CURRENT_SCHEMA", "SHOW "))]
    # the dialect's look for the version table, and the version: nothing else, no Alembic run
    assert len(queries) <= 2 and "alembic_version" in queries[-1], queries
    assert "Running upgrade" not in caplog.text


def test_the_offline_sql_needs_no_database():
    closed = _closed_port()
    result = _migrate_subprocess(f"postgresql+psycopg://postgres@127.0.0.1:{closed}/test", "--sql")
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE suppressions" in result.stdout and "ALTER TABLE suppressions ADD COLUMN origin" in result.stdout
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001_baseline')" in result.stdout
    only_0002 = _migrate_subprocess(f"sqlite:///{ROOT}/nowhere/x.sqlite3", "--sql", "--from", "0001_baseline")
    assert only_0002.returncode == 0 and "CREATE TABLE" not in only_0002.stdout
    assert "ADD COLUMN origin" in only_0002.stdout and not (ROOT / "nowhere").exists()


# ------------------------------------------------- (b) the previous release's database, migrated
@pytest.mark.parametrize("how", ["main", "subprocess"])
def test_the_previous_releases_database_is_migrated_with_every_row_kept(database_url, how, monkeypatch, capsys, apps):
    _old_database(database_url)
    if how == "main":
        monkeypatch.setenv("SPINE_CDS_DATABASE_URL", database_url)
        assert main(["migrate"]) == 0
        out = capsys.readouterr().out
    else:
        result = _migrate_subprocess(database_url)
        assert result.returncode == 0, result.stderr
        out = result.stdout
    assert out.strip().endswith(f": unversioned (made by a release before migrations) → {HEAD}"), out
    assert out.startswith("database ") and "***" not in out  # no password in these URLs to mask

    assert _versions(database_url)[0] == [HEAD] and _diff(database_url) == []
    feedback = _rows(database_url, "feedback", "id")
    assert [{k: v for k, v in row.items() if k not in ("id", "origin")} for row in feedback] == _expected(FEEDBACK)
    assert [row["origin"] for row in feedback] == ["ehr", "playground", "ehr"]  # the card's; never issued: 'ehr'
    suppressions = _rows(database_url, "suppressions", "id")
    assert [{k: v for k, v in row.items() if k not in ("id", "origin")} for row in suppressions] == _expected(SUPPRESSIONS)
    # the EHR card's suppression is an EHR one; the one the bug made from playground feedback, the playground's
    assert [(row["card_uuid"], row["origin"]) for row in suppressions] == [("card-ehr-1", "ehr"),
                                                                          ("card-play-1", "playground")]
    assert [{k: v for k, v in row.items()} for row in _rows(database_url, "issued_cards", "card_uuid")] == _expected(ISSUED)
    for name, rows in OTHERS.items():
        kept = [{k: v for k, v in row.items() if k != "id"} for row in _rows(database_url, name, next(iter(rows[0])))]
        assert kept == _expected(rows), name

    # and the service uses it: a hook call answered, feedback accepted (and suppressing, as an EHR one)
    app = apps(database_url)
    client = app.test_client()
    card = _card(client)
    assert _accept(client, card)["stored"] == 1
    assert RULE not in _rules(_call(client, _request()))
    assert [row["origin"] for row in _rows(database_url, "suppressions", "id")] == ["ehr", "playground", "ehr"]
    again = _migrate_subprocess(database_url) if how == "subprocess" else None
    if again is not None:
        assert again.returncode == 0 and again.stdout.strip().endswith(f": {HEAD} (up to date)"), again


# ------------------------------------------------------ (c) older still: before issue 12's origin
def test_a_database_from_before_the_origin_of_issue_12_is_upgraded_with_its_rows(database_url, monkeypatch, capsys):
    _old_database(database_url, BEFORE_ISSUE_12)
    assert "origin" not in _columns(database_url, "issued_cards")
    monkeypatch.setenv("SPINE_CDS_DATABASE_URL", database_url)
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"→ {HEAD}")
    assert _versions(database_url)[0] == [HEAD] and _diff(database_url) == []  # the index on the rule made too
    issued = _rows(database_url, "issued_cards", "card_uuid")
    assert [row["origin"] for row in issued] == ["ehr", "ehr"]  # what the default gave them in place
    assert [{k: v for k, v in row.items() if k != "origin"} for row in issued] == \
        [{k: v for k, v in row.items() if k != "origin"} for row in _expected(ISSUED)]
    assert [row["origin"] for row in _rows(database_url, "hook_timeouts", "id")] == ["ehr"]
    feedback = _rows(database_url, "feedback", "id")
    assert [{k: v for k, v in row.items() if k not in ("id", "origin")} for row in feedback] == _expected(FEEDBACK)
    assert {row["origin"] for row in _rows(database_url, "suppressions", "id")} == {"ehr"}


def test_a_database_with_only_some_tables_gets_the_others(database_url, apps):
    """The oldest shape the store kept upgrading in place: issued_cards alone, without its later columns."""
    engine = _engine(database_url)
    stamp = "TIMESTAMP WITH TIME ZONE" if engine.dialect.name == "postgresql" else "DATETIME"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE issued_cards (card_uuid VARCHAR(36) PRIMARY KEY, rule VARCHAR(64) NOT NULL, "
            "kind VARCHAR(32) NOT NULL, indicator VARCHAR(16) NOT NULL, service_id VARCHAR(64) NOT NULL, "
            "hook VARCHAR(64) NOT NULL, hook_instance VARCHAR(64) NOT NULL, suggestion_uuids TEXT NOT NULL, "
            f"proposed_codes TEXT NOT NULL, issued_at {stamp} NOT NULL)")
    engine.dispose()
    apps(database_url)
    assert _tables(database_url) == set(metadata.tables) | {"alembic_version"} and _versions(database_url)[0] == [HEAD]
    # (SQLite: that hand-written key lacks NOT NULL, which SQLite then does not imply; nothing else differs)
    assert [d for d in _diff(database_url) if d[0][0] != "modify_nullable"] == []


# --------------------------------------------------------------- (d) SPINE_CDS_MIGRATE=check
def test_check_refuses_a_database_behind_naming_the_command_and_starts_once_migrated(database_url, monkeypatch, apps):
    _old_database(database_url)
    with pytest.raises(ConfigError, match="spine-cds migrate") as refused:
        apps(database_url, migrate="check")
    assert "unversioned" in str(refused.value) and HEAD in str(refused.value)
    assert "alembic_version" not in _tables(database_url)  # nothing changed
    assert "origin" not in _columns(database_url, "suppressions")
    monkeypatch.setenv("SPINE_CDS_DATABASE_URL", database_url)
    assert main(["migrate"]) == 0
    monkeypatch.setenv("SPINE_CDS_MIGRATE", "check")  # as an operator sets it
    client = create_app().test_client()
    assert RULE in _rules(_call(client, _request()))
    client.application.extensions["spine_cds"].store.engine.dispose()


def test_check_refuses_a_database_at_an_earlier_revision(database_url, apps):
    store = Store(database_url)
    store.create_schema()
    with store.engine.begin() as conn:
        command.downgrade(migrations.config(connection=conn), "0001_baseline")  # through env.py, online
    assert store.schema_revision() == (migrations.BEHIND, "0001_baseline")
    assert "origin" not in _columns(database_url, "suppressions")
    with pytest.raises(ConfigError, match=r"at 0001_baseline, behind .*spine-cds migrate"):
        apps(database_url, migrate="check")
    apps(database_url)  # auto: upgraded again
    assert store.schema_revision() == (migrations.HEAD, HEAD) and _diff(database_url) == []
    store.engine.dispose()


def test_check_still_makes_an_empty_database(database_url, apps):
    apps(database_url, migrate="check")
    assert _versions(database_url)[0] == [HEAD] and _diff(database_url) == []


def test_a_database_at_an_unknown_revision_is_refused(database_url, apps, monkeypatch, capsys):
    Store(database_url).create_schema()
    engine = _engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099_from_a_newer_release'")
    engine.dispose()
    with pytest.raises(ConfigError, match="0099_from_a_newer_release.*does not know"):
        apps(database_url)
    monkeypatch.setenv("SPINE_CDS_DATABASE_URL", database_url)
    assert main(["migrate"]) == 2
    assert "does not know" in capsys.readouterr().err


def test_the_setting_is_auto_or_check():
    from service.config import Settings

    assert Settings().migrate == "auto" and Settings.from_mapping({"migrate": "CHECK"}).migrate == "CHECK"
    with pytest.raises(ConfigError, match="SPINE_CDS_MIGRATE: 'off' is not auto or check"):
        Settings.from_mapping({"migrate": "off"})


# ------------------------------------------------------ (e) two instances migrating at once
_AT = ("import sys, time\n"
       "import service.migrations, service.store\n"
       "from service.cli import main\n"
       "time.sleep(max(0.0, float(sys.argv[1]) - time.time()))\n"
       "sys.exit(main(['migrate']))\n")


def test_two_processes_migrating_at_once_both_succeed_and_migrate_once(database_url):
    _old_database(database_url)
    start = time.time() + 5  # both past their imports, then released together
    processes = [subprocess.Popen([sys.executable, "-c", _AT, str(start)], cwd=ROOT, env=_env(database_url),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
    assert [rc for rc, _, _ in results] == [0, 0], results
    outs = sorted(out.strip().split(": ", 1)[1] for _, out, _ in results)
    assert outs == [f"{HEAD} (up to date)", f"unversioned (made by a release before migrations) → {HEAD}"], results
    assert _versions(database_url)[0] == [HEAD] and _diff(database_url) == []
    assert len(_rows(database_url, "feedback", "id")) == len(FEEDBACK)


def test_a_migration_waits_for_the_one_under_way(database_url):
    """The lock: held here (PostgreSQL's advisory lock; SQLite's write lock), `migrate` waits for it."""
    if database_url.startswith("sqlite"):
        holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN IMMEDIATE")
        release = lambda: (holder.execute("COMMIT"), holder.close())  # noqa: E731
    else:
        engine = _engine(database_url)
        conn = engine.connect()
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        conn.commit()

        def release():
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.close()
            engine.dispose()
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "migrate"], cwd=ROOT, env=_env(database_url),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        assert process.poll() is None, process.communicate()  # waiting
        assert "alembic_version" not in _tables(database_url)
    finally:
        release()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and out.strip().endswith(f"empty → {HEAD}"), (out, err)
    assert _diff(database_url) == []


# ------------------------------------------------------------ (f) a database that cannot be reached
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unreachable(database_url, tmp_path) -> str:
    if database_url.startswith("sqlite"):
        (tmp_path / "a-file").write_text("not a folder")
        return f"sqlite:///{tmp_path / 'a-file' / 'spine.sqlite3'}"
    return f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{_closed_port()}/test"


def test_migrate_on_a_database_that_cannot_be_reached_exits_2_with_a_message(database_url, tmp_path, monkeypatch,
                                                                             capsys):
    url = _unreachable(database_url, tmp_path)
    monkeypatch.setenv("SPINE_CDS_DATABASE_URL", url)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "spine-cds: migrate: the database" in err and "cannot be reached" in err and "s3cret" not in err
    result = _migrate_subprocess(url)
    assert result.returncode == 2 and result.stdout == ""
    assert "cannot be reached" in result.stderr and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr and (url.startswith("sqlite") or ":***@" in result.stderr)

"""What must last: the cards we issued, the feedback on them, the suppressions that feedback made,
and the JWT ids already seen.

SQLAlchemy Core over SQLite (the embedded default, WAL mode) or PostgreSQL (by URL, when
several instances share state). No clinical text is stored: cards are kept by uuid, rule,
kind and codes; feedback as the EHR sent it. No patient, encounter or resource id is stored:
where a card must be recognised again (suppression), it is by keyed hashes (service/suppression.py).

**Faults degrade, never break.** Every statement has a timeout (SPINE_CDS_DATABASE_TIMEOUT: SQLite's
busy_timeout; PostgreSQL's statement_timeout, lock_timeout and connect timeout), and on a hook call's
path (suppression lookup, JWT replay check, recording issued cards) at most a quarter of the hook
deadline. Records of issued cards and timeouts that cannot be written wait in a bounded queue per
worker, retried by a writer thread (SPINE_CDS_WRITE_QUEUE_ROWS; past it the oldest are dropped,
counted and logged: `Store.queue_status`, in /healthz and /stats). Feedback and the replay check
that cannot reach the database raise `DatabaseUnavailable` (a 503 OperationOutcome with Retry-After),
never a 500 and never a silent loss. SQLite: a file that is not writable (read-only, immutable, a
read-only mount) is detected before each write and refused without touching it; one connection per
process and file is never closed (`_keep_open`): closing the last connection that mapped the WAL
index read-write after the files turned read-only is what crashed workers with SIGBUS. A file
removed is detected before each read and write: never written to an unlinked file (lost);
unavailable until it is back or the service restarts. A file replaced (a restore) is used from then
on, through a new engine (the old one is never closed).

**Schema**: `metadata` below is the head of the Alembic revisions in service/migrations, which make
and change it (never `create_all`). `create_schema` at start: one query when the database is at the
head; else a migration under a lock (PostgreSQL advisory lock, SQLite write lock), or, with
SPINE_CDS_MIGRATE=check, a refusal naming `spine-cds migrate`. Databases made before migrations are
completed to the baseline in place and stamped (service/migrations/__init__.py, `adopt`).

**Retention** (SPINE_CDS_RETENTION_DAYS): `purge` deletes issued cards, feedback, suppressions and
hook timeouts older than the period, in batches, and expired JWT ids. `maintain` runs it at most
once a day, after a hook answer, on the writer thread: one worker (of any instance sharing the
database) claims the day's run by a conditional UPDATE of `maintenance_runs`.
"""
from __future__ import annotations

import atexit
import ctypes
import errno
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import (
    Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text, create_engine, event,
    and_, delete, func, or_, select, text, update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from .config import MIGRATE_MODES, ConfigError, _redact_url
from .errors import Issue, Problem
from .metrics import database_error

log = logging.getLogger(__name__)

# What "the database failed" means here: driver errors, pool timeouts, the file system.
DATABASE_ERRORS = (sa_exc.SQLAlchemyError, OSError, sqlite3.Error)
RETRY_AFTER_SECONDS = 5
PURGE_EVERY = timedelta(days=1)
PURGE_BATCH = 5000
SQLITE_BUSY_SLICE = 0.01  # the longest SQLite's own (blocking) busy wait may last; the rest is cooperative
# A migration (at start or `spine-cds migrate`): how long it may wait for another instance's migration
# (PostgreSQL advisory lock, SQLite write lock) and its statements may take.
MIGRATION_TIMEOUT = 300.0
CARD_LOCK_SPACE = 0x53504E43  # pg_advisory_xact_lock(space, hashtext(card uuid)): a card's record vs its feedback
MIGRATION_LOCK_KEY = 0x5350494E45434453  # pg_advisory_xact_lock key ("SPINECDS"): one migration at a time

# The schema at the head revision of service/migrations (which create and change it; never
# create_all): tests/test_migrations.py checks that the two agree.
metadata = MetaData()

issued_cards = Table(
    "issued_cards", metadata,
    Column("card_uuid", String(36), primary_key=True),
    Column("rule", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("service_id", String(64), nullable=False),
    Column("hook", String(64), nullable=False),
    Column("hook_instance", String(64), nullable=False),
    Column("suggestion_uuids", Text, nullable=False),  # JSON array
    Column("proposed_codes", Text, nullable=False),    # JSON array
    Column("issued_at", DateTime(timezone=True), nullable=False),
    # silent mode: the rule ran and this is what it would have said; the EHR was shown nothing
    Column("silent", Boolean, nullable=False, server_default=text("false")),
    # suppression (service/suppression.py): keyed hashes, never the ids. suppression_key stands for
    # (patient, subject, rule), window_key for (patient, encounter); suppressed = the card was not shown
    # because feedback on the same card was already given within the window.
    Column("suppression_key", String(64)),
    Column("window_key", String(64)),
    Column("suppressed", Boolean, nullable=False, server_default=text("false")),
    # where the call came from: 'ehr' (the hook endpoints) or 'playground' (GET / runs), which the
    # analytics and /stats leave out unless asked (?include=playground). Old rows: 'ehr'.
    Column("origin", String(16), nullable=False, server_default=text("'ehr'")),
    Index("ix_issued_cards_issued_at", "issued_at"),
    Index("ix_issued_cards_rule", "rule"),
)

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(64), nullable=False, unique=True),
    Column("service_id", String(64), nullable=False),
    Column("card_uuid", String(64), nullable=False),
    Column("known_card", Boolean, nullable=False),
    Column("rule", String(64)),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", Text, nullable=False),  # JSON array of suggestion uuids
    Column("override_system", Text),
    Column("override_code", Text),
    Column("override_display", Text),
    Column("user_comment", Text),
    Column("outcome_timestamp", String(64), nullable=False),
    Column("outcome_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # the origin of the card it is about (issued_cards.origin), 'ehr' for a card never issued (0002)
    Column("origin", String(16), nullable=False, server_default=text("'ehr'")),
    Index("ix_feedback_card_uuid", "card_uuid"),
)

# A card accepted, or overridden with a reason: the same (patient, subject, rule) is not shown again
# within the window (SPINE_CDS_SUPPRESSION_WINDOW, applied when a hook call looks the keys up).
suppressions = Table(
    "suppressions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("suppression_key", String(64), nullable=False),  # HMAC(patient, subject, rule)
    Column("window_key", String(64)),                        # HMAC(patient, encounter); null: no encounter
    Column("rule", String(64), nullable=False),
    Column("card_uuid", String(64), nullable=False),         # the card the feedback was about
    Column("outcome", String(16), nullable=False),
    Column("suppressed_at", DateTime(timezone=True), nullable=False),
    # the origin of the card (issued_cards.origin): EHR calls consult only 'ehr' ones, so feedback on a
    # playground card never hides an EHR card (revision 0002)
    Column("origin", String(16), nullable=False, server_default=text("'ehr'")),
    Index("ix_suppressions_key", "suppression_key"),
)

# Secrets the service makes for itself (the generated hash key when SPINE_CDS_HASH_KEY is unset): in the
# database so that every worker and every instance on one PostgreSQL hash identically.
service_secrets = Table(
    "service_secrets", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

hook_timeouts = Table(
    "hook_timeouts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service_id", String(64), nullable=False),
    Column("hook_instance", String(64), nullable=False),
    Column("elapsed_ms", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("origin", String(16), nullable=False, server_default=text("'ehr'")),  # as issued_cards.origin
)

ORIGINS = ("ehr", "playground")  # issued_cards.origin, hook_timeouts.origin, feedback.origin, suppressions.origin
PLAYGROUND = "playground"

# One row per maintenance task (the purge): the worker whose UPDATE moves last_run_at runs it.
maintenance_runs = Table(
    "maintenance_runs", metadata,
    Column("name", String(32), primary_key=True),
    Column("last_run_at", DateTime(timezone=True), nullable=False),
)

jwt_replay = Table(
    "jwt_replay", metadata,
    Column("token_key", String(64), primary_key=True),  # sha256(iss | jti)
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_jwt_replay_expires_at", "expires_at"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DatabaseUnavailable(Problem):
    """The database could not take or give what was asked in time (locked, read-only, gone, down):
    a 503 OperationOutcome with Retry-After. Raised by feedback and the JWT replay check; the
    sentence names what was refused, never the data."""

    def __init__(self, what: str, reason: str = "unavailable"):
        super().__init__(503, [Issue("transient", f"{what}: the database is {reason}; nothing was stored, "
                                                  f"retry in {RETRY_AFTER_SECONDS} s")],
                         {"Retry-After": str(RETRY_AFTER_SECONDS)})


class _NotWritable(Exception):
    """The SQLite file (or its -wal, -shm, folder) cannot be written, or vanished: not tried."""


class Store:
    def __init__(self, url: str, timeout: float = 2.0, hook_timeout: float | None = None,
                 queue_rows: int = 10_000, retention_days: int = 400, migrate: str = "auto"):
        if migrate not in MIGRATE_MODES:
            raise ValueError(f"migrate must be one of {MIGRATE_MODES}")
        self.migrate_mode = migrate  # SPINE_CDS_MIGRATE: what create_schema does with a database behind
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self.timeout = float(timeout)                       # every statement, lock and connect
        self.hook_timeout = float(min(timeout, hook_timeout if hook_timeout is not None else timeout))
        self.retention_days = retention_days
        self.path: Path | None = None
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
                self.path = Path(parsed.database).resolve()
                self.path.parent.mkdir(parents=True, exist_ok=True)
            options = {"connect_args": {"timeout": SQLITE_BUSY_SLICE}}
        else:
            options = {"pool_pre_ping": True, "pool_timeout": self.timeout,
                       "connect_args": _postgres_timeouts(parsed, self.timeout)}
        self._url, self._options = url, options
        self.engine = self._make_engine()
        if self.dialect == "sqlite":
            ref = weakref.ref(self)
            # The parent's pool connections must never be closed in a child (SQLite: no connection
            # across a fork): a child that inherits one closes it when it is collected, believes it is
            # the last (POSIX locks are not inherited), checkpoints into the mapped -shm and, with the
            # files read-only by then, dies of SIGBUS (measured). So the parent closes its pool before
            # each fork (its kept-open connection stays: that close is never the last either).
            os.register_at_fork(before=lambda: _dispose_before_fork(ref()))
        self._inode: tuple[int, int] | None = None
        self._purge_counter = 0
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self._queue = _WriteQueue(self, queue_rows)
        self._next_maintenance = 0.0
        self.clock = utcnow  # what "now" is for cards, feedback and suppressions (tests set it)
        # The override reasons the cards offer, (system, code): only those suppress a card (set by the
        # app from the card contract; None accepts any reason Coding).
        self.override_reasons: frozenset[tuple[str, str]] | None = None

    @classmethod
    def from_settings(cls, settings) -> "Store":
        return cls(settings.sqlalchemy_url, timeout=settings.database_timeout,
                   hook_timeout=settings.hook_deadline / 4, queue_rows=settings.write_queue_rows,
                   retention_days=settings.retention_days, migrate=settings.migrate.strip().lower())

    # ------------------------------------------------------------ connections
    def _attempts(self, timeout: float | None = None, write: bool = False):
        """Attempts at a transaction (write) or connection (read), within `timeout` in all:

            for attempt in self._attempts(timeout, write=True):
                with attempt as conn:
                    ...

        PostgreSQL: one attempt, bounded by SET LOCAL statement_timeout and lock_timeout (psycopg waits
        cooperatively under gevent). SQLite: its own busy wait is a blocking C sleep (it would stop every
        greenlet of a gevent worker), so it is kept to SQLITE_BUSY_SLICE and the wait is here, in
        time.sleep, between attempts, until `timeout`. SQLite writes first check the file is still
        ours and writable (`_NotWritable`, nothing tried)."""
        timeout = self.timeout if timeout is None else timeout
        engine = self.engine
        if write:
            self._check_file()
        elif self.path is not None:
            try:
                self._check_file()
            except _NotWritable:
                engine = self._read_only_engine()
        if self.dialect != "sqlite":
            yield _Timed(self, timeout, write)
            return
        ends = time.monotonic() + timeout
        pause = 0.005
        while True:
            attempt = _Timed(self, min(timeout, SQLITE_BUSY_SLICE), write,
                             retry_busy=time.monotonic() + pause < ends, engine=engine)
            yield attempt
            if not attempt.busy:
                return
            time.sleep(pause)
            pause = min(0.1, pause * 2)

    def _check_file(self) -> None:
        """Before an SQLite write: the file is the one we opened (not removed, not replaced) and every
        file SQLite writes is writable. Refusing here means the failing write never happens, so the
        connection is never invalidated and closed (see `_keep_open`)."""
        if self.path is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            # Not made again here: two workers racing to make a new file while their connections to the
            # unlinked one lived crashed a worker with SIGBUS (measured). Unavailable (feedback 503, records
            # queued, /readyz 503) until the file is back or the service restarts, which makes a new one.
            raise _NotWritable("gone (the file was removed)") from None
        if self._inode is None:
            self._inode = (stat.st_dev, stat.st_ino)
        elif (stat.st_dev, stat.st_ino) != self._inode:
            self._reopen("replaced")
        for suffix in ("", "-wal", "-shm"):
            name = f"{self.path}{suffix}"
            try:
                os.close(os.open(name, os.O_RDWR))
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise _NotWritable("read-only") from None
                raise
        if not os.access(self.path.parent, os.W_OK):
            raise _NotWritable("read-only (its folder)")

    def _read_only_engine(self):
        """Reads while the SQLite files are not writable: `immutable=1` opens the file without the WAL
        index (-shm) at all. Reading through a connection that mapped the -shm read-write before the
        files turned read-only is what crashed workers with SIGBUS (measured with gdb: in
        sqlite3WalBeginReadTransaction). What only the WAL holds is not seen meanwhile (a suppression
        made moments before: its card is shown, as on any lookup failure). One connection a read."""
        if getattr(self, "_ro_engine", None) is None:
            from sqlalchemy.pool import NullPool
            self._ro_engine = create_engine(f"sqlite:///file:{self.path}?mode=ro&immutable=1&uri=true",
                                            poolclass=NullPool)
            log.error("database: the SQLite file is not writable: reads bypass its WAL (immutable), "
                      "writes are queued or refused until it is writable again")
        return self._ro_engine

    def _make_engine(self):
        engine = create_engine(self._url, **self._options)
        if self.dialect == "sqlite":
            ref = weakref.ref(self)
            event.listen(engine, "connect", lambda dbapi, record: _sqlite_connect(ref(), dbapi))
        return engine

    def _reopen(self, how: str) -> None:
        """The file was removed or replaced: a new engine for the file now at the path (its schema brought
        to the head, as at start). The old engine and its connections are kept, never closed: closing
        connections to an unlinked or replaced WAL database crashed a worker with SIGBUS (measured), and
        SQLite deletes -wal/-shm by name on a last close, which could be the new file's."""
        with self._lock:
            log.error("database: the SQLite file was %s while in use: reconnecting to the file now there", how)
            _RETIRED.append(self.engine)
            self.engine = self._make_engine()
            self._inode = None
            self._ensure_schema(refuse=False)
            stat = os.stat(self.path)
            self._inode = (stat.st_dev, stat.st_ino)

    def create_schema(self) -> None:
        """At start (create_app, the CLI): the database brought to the schema's head revision
        (service/migrations), or, with SPINE_CDS_MIGRATE=check, refused when it is behind (a
        ConfigError naming `spine-cds migrate`; an empty database is still made). At the head (every
        start but the first after an upgrade) it costs the version table's one query."""
        try:
            if self.path is not None and self.path.exists():
                self._check_file()
            writable = True
        except _NotWritable as exc:
            log.error("database: the SQLite file is %s: hook calls answer, issued cards wait in memory, "
                      "feedback is refused (503)", exc)
            writable = False
        if writable:
            self._ensure_schema()
        if self.path is not None and self.path.exists():
            stat = os.stat(self.path)
            self._inode = (stat.st_dev, stat.st_ino)

    def _ensure_schema(self, refuse: bool = True) -> None:
        """The quick look (one query against the head, known once per process), then a migration only
        when one is due and allowed. `refuse`: a database this start must not use is a ConfigError
        (else logged: a file replaced under a running service, `_reopen`)."""
        from . import migrations

        with self.engine.connect() as conn:
            what, revision = migrations.state(conn)
        if what == migrations.HEAD:
            return
        problem = self._refusal(what, revision)
        if problem is not None:
            if refuse:
                raise ConfigError([problem])
            log.error("database: %s", problem)
            return
        before, revision = self.migrate(check=self.migrate_mode == "check")
        if before != migrations.HEAD:
            log.info("database %s: migrated from %s to %s", self.redacted_url,
                     migrations.describe(before, revision), migrations.head())

    def _refusal(self, what: str, revision: str | None) -> str | None:
        from . import migrations

        if what == migrations.UNKNOWN:
            return (f"the database {self.redacted_url} is at revision {revision!r}, which this release does not "
                    f"know (a newer release migrated it): run that release, or a database made for this one")
        if self.migrate_mode == "check" and what != migrations.EMPTY:
            return (f"SPINE_CDS_MIGRATE=check: the database {self.redacted_url} is at "
                    f"{migrations.describe(what, revision)}, behind this release's schema ({migrations.head()}): "
                    f"run `spine-cds migrate`, then start again (or set SPINE_CDS_MIGRATE=auto)")
        return None

    def migrate(self, check: bool = False) -> tuple[str, str | None]:
        """Bring the database to the head revision, one instance at a time: the look and the migration
        in one transaction, under PostgreSQL's advisory lock (MIGRATION_LOCK_KEY, held until the commit)
        or SQLite's write lock (BEGIN IMMEDIATE). An instance that waited finds the work done and does
        nothing. Returns the state found under the lock (service.migrations.state). `check`: only an
        empty database is made; another behind is refused (ConfigError). Raises DATABASE_ERRORS."""
        from . import migrations

        with self._migration_connection() as conn:
            what, revision = migrations.state(conn)
            problem = self._refusal(what, revision) if check or what == migrations.UNKNOWN else None
            if problem is not None:
                raise ConfigError([problem])
            if what != migrations.HEAD:
                migrations.upgrade(conn)
            conn.commit()
        return what, revision

    def schema_revision(self) -> tuple[str, str | None]:
        """(state, revision) of the database now (service.migrations.state)."""
        from . import migrations

        with self.engine.connect() as conn:
            return migrations.state(conn)

    @property
    def redacted_url(self) -> str:
        return _redact_url(self._url)

    @contextmanager
    def _migration_connection(self):
        """A connection in a transaction that holds the migration lock, waiting for it (and running its
        statements) for at most MIGRATION_TIMEOUT."""
        ms = int(MIGRATION_TIMEOUT * 1000)
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                yield conn
                return
            if self.dialect == "sqlite":
                # pysqlite would not begin before DDL: the transaction is begun here, taking the write
                # lock first, so that the migration is all or nothing and one process migrates at a time.
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {ms}")
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    yield conn
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SLICE * 1000)}")
                return
            yield conn

    def after_fork(self) -> None:
        """Each gunicorn worker opens its own connections (pools must not cross a fork), and runs the
        scheduled purge (`maintain`): served workers only, never an app built by a test or a CLI."""
        self.engine.dispose(close=False)
        self.scheduled_maintenance = True

    scheduled_maintenance = False

    def maintain(self) -> None:
        """After a hook answer: at most once an hour per worker, ask the writer thread to run the
        purge if no worker ran it in the last day (`scheduled_purge`). Costs nothing otherwise."""
        if not self.scheduled_maintenance or not self.retention_days:
            return
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + 3600
        self._queue.request_purge()

    def scheduled_purge(self) -> dict | None:
        """The purge, when this worker wins the day's claim (one conditional UPDATE shared by every
        worker and instance on the database); None when another one ran it within the day."""
        now = self.clock()
        for attempt in self._attempts(write=True):
            with attempt as conn:
                conn.execute(self._insert_ignoring_duplicates(maintenance_runs),
                             {"name": "purge", "last_run_at": datetime(2000, 1, 1, tzinfo=timezone.utc)})
                claimed = conn.execute(update(maintenance_runs)
                                       .where(maintenance_runs.c.name == "purge",
                                              maintenance_runs.c.last_run_at < now - PURGE_EVERY)
                                       .values(last_run_at=now)).rowcount
        if claimed != 1:
            return None
        counts = self.purge()
        log.info("database: scheduled purge (retention %d days): %s", self.retention_days,
                 " ".join(f"{name}={n}" for name, n in counts.items()))
        return counts

    def purge(self, retention_days: int | None = None, now: datetime | None = None) -> dict:
        """Delete what is older than the retention period (issued cards, feedback, suppressions, hook
        timeouts; 0 days: keep them) and expired JWT ids, in batches of PURGE_BATCH rows, one
        transaction each (a lock is never held for the whole purge). Returns rows deleted per table."""
        days = self.retention_days if retention_days is None else retention_days
        now = now or self.clock()
        cutoff = now - timedelta(days=days)
        plan = [(jwt_replay, jwt_replay.c.token_key, jwt_replay.c.expires_at, now)]
        if days:
            plan = [(issued_cards, issued_cards.c.card_uuid, issued_cards.c.issued_at, cutoff),
                    (feedback, feedback.c.id, feedback.c.received_at, cutoff),
                    (suppressions, suppressions.c.id, suppressions.c.suppressed_at, cutoff),
                    (hook_timeouts, hook_timeouts.c.id, hook_timeouts.c.at, cutoff), *plan]
        counts = {}
        for table, key, when, before in plan:
            total = 0
            while True:
                batch = select(key).where(when < before).limit(PURGE_BATCH).scalar_subquery()
                for attempt in self._attempts(write=True):
                    with attempt as conn:
                        deleted = conn.execute(delete(table).where(key.in_(batch))).rowcount
                total += deleted
                if deleted < PURGE_BATCH:
                    break
            counts[table.name] = total
        return counts

    def ping(self) -> bool:
        for attempt in self._attempts(self.hook_timeout):
            with attempt as conn:
                conn.execute(text("SELECT 1"))
        return True

    def queue_status(self) -> dict:
        """This worker's queue of records waiting for the database (in /healthz and /stats)."""
        return self._queue.status()

    def _insert_ignoring_duplicates(self, table):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing()

    # ------------------------------------------------------------ issued cards
    def record_issued(self, service_id: str, hook: str, hook_instance: str, cards: list[dict],
                      extension_key: str, silent: bool = False, suppressed: bool = False,
                      keys: dict[str, tuple[str | None, str | None]] | None = None, origin: str = "ehr") -> None:
        """`keys`: card uuid → (suppression key, window key), the keyed hashes of service/suppression.py.
        `origin`: 'ehr', or 'playground' for the playground's runs (left out of the figures by default)."""
        if not cards:
            return
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}")
        now = self.clock()
        keys = keys or {}
        rows = []
        for card in cards:
            payload = card["extension"][extension_key]
            suppression_key, window_key = keys.get(card["uuid"], (None, None))
            rows.append({
                "card_uuid": card["uuid"],
                "rule": payload["rule"],
                "kind": card["source"]["topic"]["code"],
                "indicator": card["indicator"],
                "service_id": service_id,
                "hook": hook,
                "hook_instance": hook_instance,
                "suggestion_uuids": json.dumps([s["uuid"] for s in card.get("suggestions", [])]),
                "proposed_codes": json.dumps(payload["proposedCodes"]),
                "issued_at": now,
                "silent": silent,
                "suppression_key": suppression_key,
                "window_key": window_key,
                "suppressed": suppressed,
                "origin": origin,
            })
        self._record(issued_cards, rows)

    def record_timeout(self, service_id: str, hook_instance: str, elapsed_ms: float, origin: str = "ehr") -> None:
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}")
        self._record(hook_timeouts, [{"service_id": service_id, "hook_instance": hook_instance,
                                      "elapsed_ms": int(elapsed_ms), "at": utcnow(), "origin": origin}])

    def _record(self, table: Table, rows: list[dict]) -> None:
        """Write now (within the hook-path timeout), else queue for the writer thread; never raises
        for the database. While records wait, new ones join the queue directly: order is kept and
        no worker waits on a database already known to be failing."""
        if not self._queue.pending():
            try:
                self._insert_rows(table, rows, self.hook_timeout)
                return
            except (_NotWritable, *DATABASE_ERRORS) as exc:
                database_error("record")
                self._queue.failed(exc)
                if not _transient(exc):
                    self._queue.refused(table, rows, exc)
                    return
        self._queue.put(table, rows)

    def _insert_rows(self, table: Table, rows: list[dict], timeout: float) -> None:
        for attempt in self._attempts(timeout, write=True):
            with attempt as conn:
                if table is issued_cards:
                    self._lock_cards(conn, [row["card_uuid"] for row in rows])
                conn.execute(self._insert_ignoring_duplicates(table), rows)
                if table is issued_cards:
                    self._reconcile_feedback(conn, rows)

    def _lock_cards(self, conn, uuids) -> None:
        """On PostgreSQL, the card uuids' transaction-level advisory locks, in sorted order (no
        deadlock): a card's record and feedback on it, written at the same moment by two instances or
        workers, are serialised, so whichever commits second sees the other and ties them (under READ
        COMMITTED neither would see the other's uncommitted row: the feedback stayed untied for good).
        SQLite serialises its writers already."""
        if self.engine.dialect.name != "postgresql" or not uuids:
            return
        conn.execute(text("SELECT count(pg_advisory_xact_lock(:space, hashtext(u))) FROM "
                          "(SELECT DISTINCT unnest(CAST(:uuids AS text[])) AS u ORDER BY 1) AS cards"),
                     {"space": CARD_LOCK_SPACE, "uuids": sorted(set(uuids))})

    def _reconcile_feedback(self, conn, cards: list[dict]) -> None:
        """Feedback that arrived before its card was recorded (the record is written after the answer,
        or waited in the queue while the database failed) is tied to the card now: its rule, and the
        suppression it makes, dated when the feedback came. One indexed query per write."""
        by_uuid = {card["card_uuid"]: card for card in cards}
        early = conn.execute(select(feedback).where(feedback.c.card_uuid.in_(sorted(by_uuid)),
                                                    feedback.c.known_card.is_(False))).all()
        for row in early:
            card = by_uuid[row.card_uuid]
            if row.service_id != card["service_id"]:
                continue  # sent to another service's feedback endpoint: not about this card
            origin = card.get("origin") or "ehr"
            conn.execute(update(feedback).where(feedback.c.id == row.id)
                         .values(known_card=True, rule=card["rule"], origin=origin))
            if _suppresses(row.outcome, row.override_system, row.override_code, json.loads(row.accepted_suggestions),
                           card, self.override_reasons):
                conn.execute(suppressions.insert().values(
                    suppression_key=card["suppression_key"], window_key=card["window_key"], rule=card["rule"],
                    card_uuid=row.card_uuid, outcome=row.outcome, suppressed_at=row.received_at, origin=origin))

    # ---------------------------------------------------------------- feedback
    def store_feedback(self, service_id: str, items: list[dict]) -> dict:
        """Store each item once. Returns counts, the card uuids we never issued, and `suppressions`:
        how many items suppress their card from now on (accepted, or overridden with a reason, on a
        card that was shown; see service/suppression.py)."""
        try:
            summary = self._store_feedback(service_id, items)
            self._check_still_ours()
        except _NotWritable as exc:
            database_error("feedback")
            raise DatabaseUnavailable("feedback was not stored", str(exc)) from None
        except DATABASE_ERRORS as exc:
            database_error("feedback")
            log.error("database: feedback not stored (%s): answered 503", type(exc).__name__)
            raise DatabaseUnavailable("feedback was not stored") from None
        return summary

    def _check_still_ours(self) -> None:
        """After a commit: the SQLite file is still the one written (removed mid-write: not stored)."""
        if self.path is None or self._inode is None:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise _NotWritable("gone") from None
        if (stat.st_dev, stat.st_ino) != self._inode:
            raise _NotWritable("replaced")

    def _store_feedback(self, service_id: str, items: list[dict]) -> dict:
        now = self.clock()
        for attempt in self._attempts(write=True):
            with attempt as conn:  # retried whole when SQLite is busy: the counts start again
                stored = duplicates = suppressed = 0
                unknown: dict[str, None] = {}  # ordered, O(1) membership (a list made 1,000 items quadratic)
                uuids = sorted({item["card"] for item in items})
                self._lock_cards(conn, uuids)  # against the card's record being written at this moment
                # A card is known to the service that issued it: feedback sent to another service's
                # endpoint is stored as about an unknown card (and suppresses nothing).
                cards = {
                    row.card_uuid: row._mapping
                    for row in conn.execute(
                        select(issued_cards.c.card_uuid, issued_cards.c.rule, issued_cards.c.silent,
                               issued_cards.c.suppressed, issued_cards.c.suppression_key, issued_cards.c.window_key,
                               issued_cards.c.suggestion_uuids, issued_cards.c.origin)
                        .where(issued_cards.c.card_uuid.in_(uuids), issued_cards.c.service_id == service_id)
                    )
                }
                known = {uuid: row["rule"] for uuid, row in cards.items()}
                # RETURNING says whether a row went in (rowcount is unreliable with ON CONFLICT on psycopg).
                insert = self._insert_ignoring_duplicates(feedback).returning(feedback.c.id)
                for item in items:
                    reason = (item.get("overrideReason") or {}).get("reason") or {}
                    accepted = sorted(s["id"] for s in item.get("acceptedSuggestions") or [])
                    row = {
                        "dedupe_key": _dedupe_key(service_id, item),
                        "service_id": service_id,
                        "card_uuid": item["card"],
                        "known_card": item["card"] in known,
                        "rule": known.get(item["card"]),
                        "outcome": item["outcome"],
                        "accepted_suggestions": json.dumps(accepted),
                        "override_system": reason.get("system"),
                        "override_code": reason.get("code"),
                        "override_display": reason.get("display"),
                        "user_comment": (item.get("overrideReason") or {}).get("userComment"),
                        "outcome_timestamp": item["outcomeTimestamp"],
                        "outcome_at": item.get("_outcome_at"),
                        "received_at": now,
                        # the card's: feedback on a playground card is the playground's (unknown: 'ehr')
                        "origin": cards[item["card"]]["origin"] if item["card"] in cards else "ehr",
                    }
                    if conn.execute(insert, row).first() is not None:
                        stored += 1
                        card = cards.get(item["card"])
                        if card is not None and _suppresses(item["outcome"], reason.get("system"), reason.get("code"),
                                                            accepted, card, self.override_reasons):
                            conn.execute(suppressions.insert().values(
                                suppression_key=card["suppression_key"], window_key=card["window_key"], rule=card["rule"],
                                card_uuid=item["card"], outcome=item["outcome"], suppressed_at=now,
                                origin=card["origin"]))
                            suppressed += 1
                    else:
                        duplicates += 1
                    if item["card"] not in known:
                        unknown[item["card"]] = None
        return {"received": len(items), "stored": stored, "duplicates": duplicates, "unknownCards": list(unknown),
                "suppressions": suppressed}

    def feedback_rows(self) -> list[dict]:
        for attempt in self._attempts():
            with attempt as conn:
                return [dict(r._mapping) for r in conn.execute(select(feedback).order_by(feedback.c.id))]

    def issued_rows(self) -> list[dict]:
        return self.read("issued cards", lambda conn: [dict(r._mapping) for r in conn.execute(select(issued_cards))])

    def read(self, what: str, query):
        """`query(conn)` on a read connection (retried while SQLite is busy, within the timeout); the
        database failing is a 503 naming `what`, never a 500. For readers outside this module
        (analytics): they never touch the engine themselves."""
        try:
            for attempt in self._attempts():
                with attempt as conn:
                    result = query(conn)
            return result
        except DATABASE_ERRORS as exc:
            database_error("read")
            log.error("database: %s unavailable (%s)", what, type(exc).__name__)
            raise DatabaseUnavailable(f"{what} are unavailable") from None

    # ------------------------------------------------------------ suppression
    def active_suppressions(self, keys: list[str], window_key: str | None, *, same_window: bool,
                            since: datetime | None, since_outside_window: bool = False,
                            origin: str = "ehr") -> set[str]:
        """Which of `keys` are suppressed now, in one query. A suppression counts when it was made
        in the same window (same_window and its window_key equals `window_key`), or after `since`
        (with since_outside_window: only suppressions made with no window, or when this call has
        none), from feedback on a card of `origin`: an EHR call (the only caller: the playground does
        not screen) is never hidden by feedback given on the playground's cards."""
        if not keys:
            return set()
        s = suppressions.c
        clauses = []
        if same_window and window_key is not None:
            clauses.append(s.window_key == window_key)
        if since is not None:
            recent = s.suppressed_at > since
            if since_outside_window and window_key is not None:
                recent = and_(recent, s.window_key.is_(None))
            clauses.append(recent)
        if not clauses:
            return set()
        query = select(s.suppression_key).distinct().where(and_(s.suppression_key.in_(sorted(set(keys))),
                                                                s.origin == origin, or_(*clauses)))
        for attempt in self._attempts(self.hook_timeout):
            with attempt as conn:  # on the hook's path: within its deadline
                return {row.suppression_key for row in conn.execute(query)}

    def secret(self, name: str, make) -> str:
        """A secret kept in the database, made once by `make()` (the first instance to insert it wins)."""
        cached = self._secrets.get(name)
        if cached is not None:
            return cached
        for attempt in self._attempts(self.hook_timeout):  # a read: works on a read-only database
            with attempt as conn:
                value = conn.execute(select(service_secrets.c.value).where(service_secrets.c.name == name)).scalar()
        if value is not None:
            self._secrets[name] = value
            return value
        for attempt in self._attempts(self.hook_timeout, write=True):
            with attempt as conn:
                value = conn.execute(select(service_secrets.c.value).where(service_secrets.c.name == name)).scalar()
                if value is None:
                    conn.execute(self._insert_ignoring_duplicates(service_secrets),
                                 {"name": name, "value": make(), "created_at": utcnow()})
                    value = conn.execute(select(service_secrets.c.value)
                                         .where(service_secrets.c.name == name)).scalar_one()
        self._secrets[name] = value
        return value

    # -------------------------------------------------------------- JWT replay
    def remember_token(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """True the first time a (iss, jti) is seen; False on a replay. Shared by all workers."""
        key = hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()
        with self._lock:
            self._purge_counter += 1
            purge = self._purge_counter % 200 == 0
        try:
            for attempt in self._attempts(self.hook_timeout, write=True):
                with attempt as conn:
                    if purge:
                        conn.execute(jwt_replay.delete().where(jwt_replay.c.expires_at < utcnow()))
                    inserted = conn.execute(
                        self._insert_ignoring_duplicates(jwt_replay).returning(jwt_replay.c.token_key),
                        {"token_key": key, "expires_at": expires_at}).first()
            self._check_still_ours()
        except _NotWritable as exc:
            database_error("replay_check")
            raise DatabaseUnavailable(_REPLAY_REFUSED, str(exc)) from None
        except DATABASE_ERRORS as exc:
            database_error("replay_check")
            log.error("database: JWT replay check failed (%s): refused with 503", type(exc).__name__)
            raise DatabaseUnavailable(_REPLAY_REFUSED) from None
        return inserted is not None

    def stats(self, include_playground: bool = False) -> dict:
        """Counts of EHR traffic; with `include_playground`, the playground's runs and the feedback on
        their cards too (`origins` says which)."""
        try:
            out = self._stats(include_playground)
        except DATABASE_ERRORS as exc:
            database_error("stats")
            log.error("database: statistics unavailable (%s)", type(exc).__name__)
            raise DatabaseUnavailable("statistics are unavailable") from None
        out["writeQueue"] = self.queue_status()
        return out

    def _stats(self, include_playground: bool = False) -> dict:
        cards = issued_cards.c
        origin = and_(True) if include_playground else cards.origin != PLAYGROUND
        # feedback on a playground card is playground traffic too (on an unknown card: the EHR's)
        on_cards = feedback.outerjoin(issued_cards, feedback.c.card_uuid == cards.card_uuid)
        feedback_origin = and_(True) if include_playground else or_(cards.origin.is_(None), cards.origin != PLAYGROUND)
        timeout_origin = and_(True) if include_playground else hook_timeouts.c.origin != PLAYGROUND
        for attempt in self._attempts():
            with attempt as conn:
                by_rule = {row.rule: row.n for row in conn.execute(
                    select(cards.rule, func.count().label("n"))
                    .where(cards.silent.is_(False), cards.suppressed.is_(False), origin)
                    .group_by(cards.rule))}
                silent = {row.rule: row.n for row in conn.execute(
                    select(cards.rule, func.count().label("n")).where(cards.silent.is_(True), origin)
                    .group_by(cards.rule))}
                suppressed = {row.rule: row.n for row in conn.execute(
                    select(cards.rule, func.count().label("n"))
                    .where(cards.silent.is_(False), cards.suppressed.is_(True), origin)
                    .group_by(cards.rule))}
                outcomes = {row.outcome: row.n for row in conn.execute(
                    select(feedback.c.outcome, func.count().label("n")).select_from(on_cards)
                    .where(feedback_origin).group_by(feedback.c.outcome))}
                timeouts = conn.execute(select(func.count()).select_from(hook_timeouts)
                                        .where(timeout_origin)).scalar_one()
        return {"cardsIssued": sum(by_rule.values()), "cardsByRule": by_rule, "silentCardsByRule": silent,
                "suppressedCardsByRule": suppressed, "feedback": outcomes, "hookTimeouts": timeouts,
                "origins": list(ORIGINS) if include_playground else ["ehr"]}

    def count(self, table_name: str) -> int:
        table = metadata.tables[table_name]
        for attempt in self._attempts():
            with attempt as conn:
                return conn.execute(select(func.count()).select_from(table)).scalar_one()


class _WriteQueue:
    """Records (issued cards, hook timeouts) the database could not take yet, per process: bounded
    by `cap` rows (the oldest dropped first, counted and logged), retried by one daemon thread with
    backoff (0.25 s doubling to 30 s), flushed once more at exit. The thread also runs the scheduled
    purge. A forked worker starts with an empty queue and its own thread and locks."""

    IDLE_EXIT = 60.0

    def __init__(self, store: Store, cap: int):
        self._store = weakref.ref(store)
        self.cap = max(1, cap)
        self._pid = None
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.batches: deque[tuple[Table, list[dict]]] = deque()
        self.rows = 0
        self.dropped = 0
        self.written_late = 0
        self.last_error: str | None = None
        self.purge_due = False
        self.in_flight = None
        self._exit_hook = False

    def _here(self) -> threading.Condition:
        if self._pid != os.getpid():
            with _KEPT_LOCK:
                if self._pid != os.getpid():
                    self._reset()
        return self._cond

    def pending(self) -> bool:
        return self._pid == os.getpid() and bool(self.batches)

    def status(self) -> dict:
        if self._pid != os.getpid():
            return {"pendingRecords": 0, "droppedRecords": 0, "writtenLate": 0, "lastError": None}
        return {"pendingRecords": self.rows, "droppedRecords": self.dropped, "writtenLate": self.written_late,
                "lastError": self.last_error}

    def failed(self, exc: BaseException) -> None:
        self.last_error = type(exc).__name__ if not isinstance(exc, _NotWritable) else f"not writable: {exc}"

    def put(self, table: Table, rows: list[dict]) -> None:
        dropped = 0
        with self._here():
            first = not self.batches
            while self.batches and self.rows + len(rows) > self.cap:
                # the oldest, but not the one the writer is writing (it may yet go in)
                victim = 1 if self.batches[0] is self.in_flight and len(self.batches) > 1 else 0
                _, old = self.batches[victim]
                del self.batches[victim]
                self.rows -= len(old)
                dropped += len(old)
            if len(rows) > self.cap:
                dropped += len(rows)
            else:
                self.batches.append((table, rows))
                self.rows += len(rows)
            self.dropped += dropped
            pending = self.rows
            self._start()
            self._cond.notify()
        if first:
            log.error("database: cannot write (%s): %s records kept in memory and retried (at most %d rows)",
                      self.last_error or "unavailable", table.name, self.cap)
        if dropped:
            log.error("database: write queue full (%d rows): %d oldest records dropped, %d dropped in this "
                      "worker so far", pending, dropped, self.dropped)

    def refused(self, table: Table, rows: list[dict], exc: BaseException) -> None:
        """Records the database refuses (not a fault of the moment: a value too long, a constraint):
        retrying cannot help; dropped, counted and logged (the error type only)."""
        with self._here():
            self.dropped += len(rows)
        log.error("database: %d %s records refused (%s): dropped, not retried", len(rows), table.name,
                  type(exc).__name__)

    def request_purge(self) -> None:
        with self._here():
            self.purge_due = True
            self._start()
            self._cond.notify()

    def _start(self) -> None:  # with self._cond held
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="spine-cds-db-writer", daemon=True)
            self._thread.start()
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(self.flush_at_exit, os.getpid())

    def _run(self) -> None:
        backoff = 0.25
        while True:
            with self._cond:
                if not self.batches and not self.purge_due:
                    self._cond.wait(self.IDLE_EXIT)
                    if not self.batches and not self.purge_due:
                        self._thread = None
                        return
                purge, self.purge_due = self.purge_due, False
                batch = self.in_flight = self.batches[0] if self.batches else None
            store = self._store()
            if store is None:
                return
            if batch is not None and self._write(store, batch):
                backoff = 0.25
            elif batch is not None:
                time.sleep(backoff)
                backoff = min(30.0, backoff * 2)
            if purge:
                try:
                    store.scheduled_purge()
                except (_NotWritable, *DATABASE_ERRORS) as exc:
                    database_error("purge")
                    log.error("database: scheduled purge failed (%s); tried again in an hour", type(exc).__name__)
            del store

    def _write(self, store: Store, batch) -> bool:
        table, rows = batch
        try:
            store._insert_rows(table, rows, store.timeout)
            written = True
        except (_NotWritable, *DATABASE_ERRORS) as exc:
            database_error("queued_write")
            self.failed(exc)
            if _transient(exc):
                return False
            written = False  # would fail forever and hold back every record behind it
            self.refused(table, rows, exc)
        with self._cond:
            if self.batches and self.batches[0] is batch:
                self.batches.popleft()
                self.rows -= len(rows)
            if written:
                self.written_late += len(rows)
            drained = not self.batches
        if drained:
            log.warning("database: available again: queued records written (%d in this worker so far)",
                        self.written_late)
        return True

    def flush_at_exit(self, pid: int) -> None:
        """At a worker's exit: one more try for what waits; what cannot be written is counted lost."""
        store = self._store()
        if pid != os.getpid() or store is None or not self.batches:
            return
        while self.batches and self._write(store, self.batches[0]):
            pass
        if self.batches:
            try:
                log.error("database: exiting with %d records not written (lost)", self.rows)
            except Exception:  # noqa: BLE001 - logging may already be shut down
                pass


def _suppresses(outcome: str, reason_system, reason_code, accepted: list[str], card, reasons) -> bool:
    """On a card the EHR was shown and that carries its keys (`card`: its issued_cards row as a
    mapping): accepted with suggestions the card offered, or overridden with one of the reasons the
    cards offer (`reasons`, (system, code); None: any reason Coding). A comment alone is not a reason,
    as in the analytics; an unknown reason or suggestion is stored but suppresses nothing."""
    if card["silent"] or card["suppressed"] or not card["suppression_key"]:
        return False
    if outcome == "accepted":
        offered = set(json.loads(card["suggestion_uuids"]))
        return bool(accepted) and set(accepted) <= offered
    if outcome != "overridden" or not reason_code:
        return False
    return reasons is None or (reason_system, reason_code) in reasons


def _dedupe_key(service_id: str, item: dict) -> str:
    """One feedback per card and outcome: the first is stored, the same again (another timestamp,
    reason or comment: a resend, a double click) is a duplicate. Rows stored before this rule keep
    the key they had (it included the timestamp)."""
    identity = ["v2", service_id, item["card"], item["outcome"]]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


_REPLAY_REFUSED = "the request was refused: its JWT id (jti) could not be checked against replays"


class _Timed:
    """One attempt of `Store._attempts`: a connection or transaction whose statements wait at most
    `timeout` (SQLite busy_timeout, reset on the way out; PostgreSQL SET LOCAL statement_timeout and
    lock_timeout, which end with the transaction). With `retry_busy`, an SQLite "database is
    locked/busy" is swallowed and flagged (`busy`) for another attempt."""

    def __init__(self, store: Store, timeout: float, write: bool, retry_busy: bool = False, engine=None):
        self.store, self.ms, self.write = store, max(1, int(timeout * 1000)), write
        self.retry_busy, self.busy = retry_busy, False
        self.engine = engine if engine is not None else store.engine

    def __enter__(self):
        self._cm = self.engine.begin() if self.write else self.engine.connect()
        conn = self._cm.__enter__()
        try:
            if self.store.dialect == "sqlite":
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {self.ms}")
            elif self.store.dialect == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {self.ms}")
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {self.ms}")
        except BaseException:
            self._cm.__exit__(*__import__("sys").exc_info())
            raise
        self.conn = conn
        return conn

    def __exit__(self, kind, value, tb):
        if kind is None and self.store.dialect == "sqlite":
            try:
                self.conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_SLICE * 1000)}")
            except DATABASE_ERRORS:
                pass
        try:
            self._cm.__exit__(kind, value, tb)  # commit (may itself be busy) or roll back
        except sa_exc.OperationalError as exc:
            if not (self.retry_busy and _busy(exc)):
                raise
            self.busy = True
            return True
        if kind is not None and self.retry_busy and issubclass(kind, sa_exc.OperationalError) and _busy(value):
            self.busy = True
            return True
        return False


def _transient(exc: BaseException) -> bool:
    """A fault of the moment (locked, timed out, read-only, gone, disconnected): worth retrying.
    DataError, IntegrityError, ProgrammingError are not."""
    if isinstance(exc, (sa_exc.DataError, sa_exc.IntegrityError, sa_exc.ProgrammingError)):
        return False
    return True


def _busy(exc) -> bool:
    message = str(getattr(exc, "orig", exc)).lower()
    return "locked" in message or "busy" in message


def _postgres_timeouts(url, timeout: float) -> dict:
    """libpq options: statement and lock timeouts for every session (added to the URL's own
    `options`, e.g. a search_path), and a connect timeout (libpq's least is 2 s)."""
    ms = max(1, int(timeout * 1000))
    own = url.query.get("options", "")
    own = " ".join(own) if isinstance(own, tuple) else own
    return {"options": f"{own} -c statement_timeout={ms} -c lock_timeout={ms}".strip(),
            "connect_timeout": max(2, int(timeout + 0.999))}


def _sqlite_connect(store: Store | None, dbapi_connection) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:  # a read-only file keeps its journal mode
        pass
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SLICE * 1000)}")
    cursor.close()
    if store is not None and store.path is not None:
        _keep_open(store.path)


def _dispose_before_fork(store: Store | None) -> None:
    if store is not None:
        try:
            store.engine.dispose()
        except Exception:  # noqa: BLE001 - never stop a fork for this
            pass


_RETIRED: list = []  # engines of SQLite files removed or replaced under us: never disposed
_KEPT_OPEN: dict[tuple[int, int, int], sqlite3.Connection] = {}
_KEPT_LOCK = threading.Lock()


def _keep_open(path: Path) -> None:
    """One connection per process and database file that is never closed nor deallocated.

    In WAL mode every connection maps the -shm file. When the database files turn read-only (chmod,
    chattr +i, a read-only remount) while mapped read-write, closing the *last* connection of the
    process to that file crashes the process with SIGBUS (measured: SQLite 3.40, a failed write
    invalidates the pool's only connection, which is closed). With this one always open, no pool
    connection is ever the last; the OS releases it when the process exits. A process that opens
    the file when it is already read-only maps it read-only, which is safe."""
    try:
        stat = os.stat(path)
    except OSError:
        return
    key = (os.getpid(), stat.st_dev, stat.st_ino)
    with _KEPT_LOCK:
        if key in _KEPT_OPEN:
            return
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # maps the WAL index
        except sqlite3.Error:
            return
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))  # never deallocated, so never closed
        _KEPT_OPEN[key] = conn

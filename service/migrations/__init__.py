"""Schema migrations (Alembic), shipped inside the package and configured here, without alembic.ini.

- `versions/` holds the revisions, written by hand: `0001_baseline` is the schema as the releases
  before migrations made it (frozen), each later one a change. `service.store.metadata` is kept
  equal to the head (tests/test_migrations.py compares them with Alembic's autogenerate).
- `state(conn)` says where a database stands: one cheap query (the version table) against the head,
  which is computed once per process. The Alembic machinery runs only when an upgrade is due.
- `upgrade(conn)` brings a database to the head on a connection already in a transaction (the
  caller holds the lock: service/store.py, `Store.migrate`): an empty one from nothing; one made
  before migrations (tables, no `alembic_version`) is first completed to the baseline in place and
  stamped with it (`adopt`).
- `sql(url, start)`: the SQL of the revisions, printed without connecting (`spine-cds migrate --sql`).

A new revision: a file `versions/000N_name.py` with `revision = "000N_name"`, `down_revision` the
previous one, `upgrade()` (and `downgrade()`) with `alembic.op`; then the same change in
service/store.py's `metadata`. `env.py` makes the usual `alembic` command work too, given a config
with `script_location = service/migrations` and `sqlalchemy.url`.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0001_baseline"

# What a database is, for `state`:
HEAD = "head"                # at the head revision: nothing to do
BEHIND = "behind"            # at an earlier revision
EMPTY = "empty"              # none of our tables, no version table: made from nothing
UNVERSIONED = "unversioned"  # our tables, no version table: made by a release before migrations
UNKNOWN = "unknown"          # at a revision this release does not know (a newer release migrated it)

_LOCK = threading.Lock()
_SCRIPT: ScriptDirectory | None = None


class _Quiet(logging.Filter):
    """Alembic says at INFO which dialect it found each time a context is made (every start's look at
    the version table): dropped. What it runs ("Running upgrade ... -> ...") is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume"))


if not any(isinstance(f, _Quiet) for f in logging.getLogger("alembic.runtime.migration").filters):
    logging.getLogger("alembic.runtime.migration").addFilter(_Quiet())
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # "setup plugin ..." at every start


def config(url: str | None = None, connection=None, output=None) -> Config:
    """An Alembic Config pointing at this package (the URL and connection as attributes: a URL's `%`
    would be read as interpolation by the config parser)."""
    cfg = Config(output_buffer=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        cfg.attributes["url"] = url
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script() -> ScriptDirectory:
    """The revisions, read once per process."""
    global _SCRIPT
    if _SCRIPT is None:
        with _LOCK:
            if _SCRIPT is None:
                _SCRIPT = ScriptDirectory.from_config(config())
    return _SCRIPT


def head() -> str:
    return script().get_current_head()


def current(conn) -> str | None:
    """The database's revision (None: no version table, or an empty one)."""
    return MigrationContext.configure(conn).get_current_revision()


def ours(conn) -> bool:
    """Whether any table of the baseline is there (a database made before migrations)."""
    names = set(inspect(conn).get_table_names())
    return bool(names & set(_baseline().tables))


def state(conn) -> tuple[str, str | None]:
    """(what the database is: HEAD, BEHIND, EMPTY, UNVERSIONED or UNKNOWN; its revision). At the head:
    the version table's one query (and the dialect's look for the table)."""
    revision = current(conn)
    if revision == head():
        return HEAD, revision
    if revision is None:
        return (UNVERSIONED if ours(conn) else EMPTY), None
    try:
        script().get_revision(revision)
    except Exception:  # noqa: BLE001 - alembic's ResolutionError / CommandError: not one of ours
        return UNKNOWN, revision
    return BEHIND, revision


def describe(what: str, revision: str | None) -> str:
    """How `spine-cds migrate` names a state: the revision, or what stands for one."""
    if revision is not None:
        return revision
    return {EMPTY: "empty", UNVERSIONED: "unversioned (made by a release before migrations)"}.get(what, what)


def upgrade(conn) -> tuple[str, str | None]:
    """Bring the database on `conn` (in a transaction the caller commits, holding the lock) to the
    head; returns the state it was in (`state`), read under that lock. A database at an unknown
    revision is left alone (the caller refuses it)."""
    what, revision = state(conn)
    if what in (HEAD, UNKNOWN):
        return what, revision
    if what == UNVERSIONED:
        adopt(conn)
    scripts = script()
    target = scripts.get_current_head()

    def upgrade_revs(rev, context):
        return scripts._upgrade_revs(target, rev)  # what `alembic upgrade head` runs (command.upgrade)

    with EnvironmentContext(config(), scripts, fn=upgrade_revs, destination_rev=target) as env:
        env.configure(connection=conn, target_metadata=None)
        with env.begin_transaction():  # the caller's transaction: nothing is begun nor committed here
            env.run_migrations()
    return what, revision


def adopt(conn) -> None:
    """A database made by `create_all` before migrations, brought to the baseline in place: the tables it
    lacks created, the columns it lacks added with their defaults (NOT NULL only with a default, as the
    releases before did), the indexes it lacks made; then stamped with the baseline revision."""
    baseline = _baseline()
    inspector = inspect(conn)
    present_tables = set(inspector.get_table_names())
    for table in baseline.sorted_tables:
        if table.name not in present_tables:
            table.create(conn)
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                default = f" DEFAULT {column.server_default.arg.text}" if column.server_default is not None else ""
                null = " NOT NULL" if not column.nullable and default else ""
                conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{default}{null}"))
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)
    MigrationContext.configure(conn).stamp(script(), BASELINE)


def sql(url: str, start: str | None = None, output=None) -> None:
    """The SQL of the revisions after `start` (None: from nothing) up to the head, in the dialect of
    `url`, written to `output` (stdout) without connecting (Alembic's offline mode, through env.py)."""
    from alembic import command

    command.upgrade(config(url=url, output=output), f"{start or 'base'}:head", sql=True)


def _baseline():
    return script().get_revision(BASELINE).module.baseline_metadata()

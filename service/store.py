"""What must last: the cards we issued, the feedback on them, the suppressions that feedback made,
and the JWT ids already seen.

SQLAlchemy Core over SQLite (the embedded default, WAL mode) or PostgreSQL (by URL, when
several instances share state). No clinical text is stored: cards are kept by uuid, rule,
kind and codes; feedback as the EHR sent it. No patient, encounter or resource id is stored:
where a card must be recognised again (suppression), it is by keyed hashes (service/suppression.py).
"""
from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    Boolean, Column, DateTime, Index, Integer, MetaData, String, Table, Text, create_engine, event,
    and_, func, or_, select, text,
)
from sqlalchemy.engine import make_url

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
)

jwt_replay = Table(
    "jwt_replay", metadata,
    Column("token_key", String(64), primary_key=True),  # sha256(iss | jti)
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_jwt_replay_expires_at", "expires_at"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    def __init__(self, url: str):
        parsed = make_url(url)
        options = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            options = {"connect_args": {"timeout": 10}}
        self.engine = create_engine(url, **options)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._purge_counter = 0
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}
        self.clock = utcnow  # what "now" is for cards, feedback and suppressions (tests set it)

    def create_schema(self) -> None:
        metadata.create_all(self.engine)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added since a database was created (there are no migrations yet): added in place,
        with their defaults, so an existing database keeps its data."""
        from sqlalchemy import inspect
        inspector = inspect(self.engine)
        with self.engine.begin() as conn:
            for table in metadata.sorted_tables:
                present = {c["name"] for c in inspector.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in present:
                        kind = column.type.compile(dialect=self.engine.dialect)
                        default = f" DEFAULT {column.server_default.arg.text}" if column.server_default is not None else ""
                        null = " NOT NULL" if not column.nullable and default else ""
                        conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{default}{null}'))

    def after_fork(self) -> None:
        """Each gunicorn worker opens its own connections (pools must not cross a fork)."""
        self.engine.dispose(close=False)

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    def _insert_ignoring_duplicates(self, table):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing()

    # ------------------------------------------------------------ issued cards
    def record_issued(self, service_id: str, hook: str, hook_instance: str, cards: list[dict],
                      extension_key: str, silent: bool = False, suppressed: bool = False,
                      keys: dict[str, tuple[str | None, str | None]] | None = None) -> None:
        """`keys`: card uuid → (suppression key, window key), the keyed hashes of service/suppression.py."""
        if not cards:
            return
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
            })
        with self.engine.begin() as conn:
            conn.execute(self._insert_ignoring_duplicates(issued_cards), rows)

    def record_timeout(self, service_id: str, hook_instance: str, elapsed_ms: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(hook_timeouts.insert().values(service_id=service_id, hook_instance=hook_instance,
                                                       elapsed_ms=int(elapsed_ms), at=utcnow()))

    # ---------------------------------------------------------------- feedback
    def store_feedback(self, service_id: str, items: list[dict]) -> dict:
        """Store each item once. Returns counts, the card uuids we never issued, and `suppressions`:
        how many items suppress their card from now on (accepted, or overridden with a reason, on a
        card that was shown; see service/suppression.py)."""
        now = self.clock()
        stored = duplicates = suppressed = 0
        unknown: list[str] = []
        with self.engine.begin() as conn:
            uuids = sorted({item["card"] for item in items})
            cards = {
                row.card_uuid: row
                for row in conn.execute(
                    select(issued_cards.c.card_uuid, issued_cards.c.rule, issued_cards.c.silent,
                           issued_cards.c.suppressed, issued_cards.c.suppression_key, issued_cards.c.window_key)
                    .where(issued_cards.c.card_uuid.in_(uuids))
                )
            }
            known = {uuid: row.rule for uuid, row in cards.items()}
            # RETURNING says whether a row went in (rowcount is unreliable with ON CONFLICT on psycopg).
            insert = self._insert_ignoring_duplicates(feedback).returning(feedback.c.id)
            for item in items:
                reason = (item.get("overrideReason") or {}).get("reason") or {}
                accepted = sorted(s["id"] for s in item.get("acceptedSuggestions") or [])
                row = {
                    "dedupe_key": _dedupe_key(service_id, item, accepted, reason),
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
                }
                if conn.execute(insert, row).first() is not None:
                    stored += 1
                    card = cards.get(item["card"])
                    if card is not None and _suppresses(item, card):
                        conn.execute(suppressions.insert().values(
                            suppression_key=card.suppression_key, window_key=card.window_key, rule=card.rule,
                            card_uuid=item["card"], outcome=item["outcome"], suppressed_at=now))
                        suppressed += 1
                else:
                    duplicates += 1
                if item["card"] not in known and item["card"] not in unknown:
                    unknown.append(item["card"])
        return {"received": len(items), "stored": stored, "duplicates": duplicates, "unknownCards": unknown,
                "suppressions": suppressed}

    def feedback_rows(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(feedback).order_by(feedback.c.id))]

    def issued_rows(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(issued_cards))]

    # ------------------------------------------------------------ suppression
    def active_suppressions(self, keys: list[str], window_key: str | None, *, same_window: bool,
                            since: datetime | None, since_outside_window: bool = False) -> set[str]:
        """Which of `keys` are suppressed now, in one query. A suppression counts when it was made
        in the same window (same_window and its window_key equals `window_key`), or after `since`
        (with since_outside_window: only suppressions made with no window, or when this call has
        none)."""
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
                                                                or_(*clauses)))
        with self.engine.connect() as conn:
            return {row.suppression_key for row in conn.execute(query)}

    def secret(self, name: str, make) -> str:
        """A secret kept in the database, made once by `make()` (the first instance to insert it wins)."""
        cached = self._secrets.get(name)
        if cached is not None:
            return cached
        with self.engine.begin() as conn:
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
        with self.engine.begin() as conn:
            if purge:
                conn.execute(jwt_replay.delete().where(jwt_replay.c.expires_at < utcnow()))
            inserted = conn.execute(self._insert_ignoring_duplicates(jwt_replay).returning(jwt_replay.c.token_key),
                                    {"token_key": key, "expires_at": expires_at}).first()
            return inserted is not None

    def stats(self) -> dict:
        with self.engine.connect() as conn:
            by_rule = {row.rule: row.n for row in conn.execute(
                select(issued_cards.c.rule, func.count().label("n"))
                .where(issued_cards.c.silent.is_(False), issued_cards.c.suppressed.is_(False))
                .group_by(issued_cards.c.rule))}
            silent = {row.rule: row.n for row in conn.execute(
                select(issued_cards.c.rule, func.count().label("n")).where(issued_cards.c.silent.is_(True))
                .group_by(issued_cards.c.rule))}
            suppressed = {row.rule: row.n for row in conn.execute(
                select(issued_cards.c.rule, func.count().label("n"))
                .where(issued_cards.c.silent.is_(False), issued_cards.c.suppressed.is_(True))
                .group_by(issued_cards.c.rule))}
            outcomes = {row.outcome: row.n for row in conn.execute(
                select(feedback.c.outcome, func.count().label("n")).group_by(feedback.c.outcome))}
            timeouts = conn.execute(select(func.count()).select_from(hook_timeouts)).scalar_one()
        return {"cardsIssued": sum(by_rule.values()), "cardsByRule": by_rule, "silentCardsByRule": silent,
                "suppressedCardsByRule": suppressed, "feedback": outcomes, "hookTimeouts": timeouts}

    def count(self, table_name: str) -> int:
        table = metadata.tables[table_name]
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _suppresses(item: dict, card) -> bool:
    """Accepted, or overridden with a reason (a reason Coding: a comment alone is not one, as in the
    analytics), on a card the EHR was shown and that carries its keys."""
    if card.silent or card.suppressed or not card.suppression_key:
        return False
    if item["outcome"] == "accepted":
        return True
    reason = (item.get("overrideReason") or {}).get("reason") or {}
    return item["outcome"] == "overridden" and bool(reason.get("code"))


def _dedupe_key(service_id: str, item: dict, accepted: list[str], reason: dict) -> str:
    identity = [service_id, item["card"], item["outcome"], item["outcomeTimestamp"], accepted,
                reason.get("system"), reason.get("code"),
                (item.get("overrideReason") or {}).get("userComment")]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()

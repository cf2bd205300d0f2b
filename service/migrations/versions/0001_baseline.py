"""The baseline: the schema of the releases before migrations.

As `metadata.create_all` made it up to git commit 28657c3 (issue 12). Frozen: later changes go in later
revisions, never here.

Databases made by those releases (no `alembic_version` table) are brought to this revision in place
and stamped with it (service/migrations/__init__.py, `adopt`): the tables they lack are created from
`baseline_metadata()`, the columns and indexes they lack are added (the columns with their defaults),
then the later revisions run.

Revision ID: 0001_baseline
Revises: (none)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> dict[str, list]:
    """Each table's columns and constraints, new objects at every call (a Column belongs to one table)."""
    when = sa.DateTime(timezone=True)
    return {
        "issued_cards": [
            sa.Column("card_uuid", sa.String(36), primary_key=True),
            sa.Column("rule", sa.String(64), nullable=False),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("indicator", sa.String(16), nullable=False),
            sa.Column("service_id", sa.String(64), nullable=False),
            sa.Column("hook", sa.String(64), nullable=False),
            sa.Column("hook_instance", sa.String(64), nullable=False),
            sa.Column("suggestion_uuids", sa.Text, nullable=False),
            sa.Column("proposed_codes", sa.Text, nullable=False),
            sa.Column("issued_at", when, nullable=False),
            sa.Column("silent", sa.Boolean, nullable=False, server_default=sa.text("false")),
            sa.Column("suppression_key", sa.String(64)),
            sa.Column("window_key", sa.String(64)),
            sa.Column("suppressed", sa.Boolean, nullable=False, server_default=sa.text("false")),
            sa.Column("origin", sa.String(16), nullable=False, server_default=sa.text("'ehr'")),
        ],
        "feedback": [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("dedupe_key", sa.String(64), nullable=False),
            sa.Column("service_id", sa.String(64), nullable=False),
            sa.Column("card_uuid", sa.String(64), nullable=False),
            sa.Column("known_card", sa.Boolean, nullable=False),
            sa.Column("rule", sa.String(64)),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("accepted_suggestions", sa.Text, nullable=False),
            sa.Column("override_system", sa.Text),
            sa.Column("override_code", sa.Text),
            sa.Column("override_display", sa.Text),
            sa.Column("user_comment", sa.Text),
            sa.Column("outcome_timestamp", sa.String(64), nullable=False),
            sa.Column("outcome_at", when),
            sa.Column("received_at", when, nullable=False),
            sa.UniqueConstraint("dedupe_key"),
        ],
        "suppressions": [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("suppression_key", sa.String(64), nullable=False),
            sa.Column("window_key", sa.String(64)),
            sa.Column("rule", sa.String(64), nullable=False),
            sa.Column("card_uuid", sa.String(64), nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("suppressed_at", when, nullable=False),
        ],
        "service_secrets": [
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
            sa.Column("created_at", when, nullable=False),
        ],
        "hook_timeouts": [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("service_id", sa.String(64), nullable=False),
            sa.Column("hook_instance", sa.String(64), nullable=False),
            sa.Column("elapsed_ms", sa.Integer, nullable=False),
            sa.Column("at", when, nullable=False),
            sa.Column("origin", sa.String(16), nullable=False, server_default=sa.text("'ehr'")),
        ],
        "maintenance_runs": [
            sa.Column("name", sa.String(32), primary_key=True),
            sa.Column("last_run_at", when, nullable=False),
        ],
        "jwt_replay": [
            sa.Column("token_key", sa.String(64), primary_key=True),
            sa.Column("expires_at", when, nullable=False),
        ],
    }


INDEXES = [  # (name, table, columns)
    ("ix_issued_cards_issued_at", "issued_cards", ["issued_at"]),
    ("ix_issued_cards_rule", "issued_cards", ["rule"]),
    ("ix_feedback_card_uuid", "feedback", ["card_uuid"]),
    ("ix_suppressions_key", "suppressions", ["suppression_key"]),
    ("ix_jwt_replay_expires_at", "jwt_replay", ["expires_at"]),
]


def upgrade() -> None:
    for name, columns in _tables().items():
        op.create_table(name, *columns)
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for name in reversed(list(_tables())):
        op.drop_table(name)


def baseline_metadata() -> sa.MetaData:
    """The baseline's tables as a MetaData of their own (never the service's `metadata`): what a
    database made before migrations is compared with, and completed from, before it is stamped."""
    meta = sa.MetaData()
    for name, columns in _tables().items():
        sa.Table(name, meta, *columns)
    for name, table, columns in INDEXES:
        sa.Index(name, *(meta.tables[table].c[c] for c in columns))
    return meta

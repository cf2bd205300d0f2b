"""Suppressions and feedback get the origin of their card.

The `origin` of the card they are about ('ehr' or 'playground').

The bug this fixes: feedback on a playground card (issued_cards.origin = 'playground') made a
suppression keyed like an EHR one, so an EHR patient whose id equals the playground's demo patient
had real cards hidden by someone trying the playground. From this revision the store writes the
card's origin on the feedback and suppression rows it makes, and an EHR call consults only
suppressions with origin 'ehr'.

Existing rows: 'ehr' by the server default, then those about a playground card are set to
'playground' (what they should have been), so the suppressions the bug already made stop hiding EHR
cards. Feedback on a card never issued stays 'ehr', as the analytics count it.

No index on (origin, suppression_key): the lookup goes by `ix_suppressions_key`, whose keys are keyed
hashes that match a handful of rows; the origin is checked on those.

Revision ID: 0002_suppression_origin
Revises: 0001_baseline
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_suppression_origin"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

TABLES = ("suppressions", "feedback")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("origin", sa.String(16), nullable=False, server_default=sa.text("'ehr'")))
        op.execute(f"UPDATE {table} SET origin = 'playground' WHERE card_uuid IN "
                   "(SELECT card_uuid FROM issued_cards WHERE origin = 'playground')")


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:  # SQLite: the table is copied without the column
            batch.drop_column("origin")

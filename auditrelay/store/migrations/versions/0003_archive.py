"""The relational archive of audit events (issue 6).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from auditrelay.store.db import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archived_events",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(2048), nullable=False),
        sa.Column("workspace_id", sa.String(43), nullable=False),
        sa.Column("type", sa.String(256), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("actor_id", sa.String(256), nullable=False),
        sa.Column("actor_type", sa.String(20), nullable=False),
        sa.Column("target_type", sa.String(256), nullable=True),
        sa.Column("target_id", sa.String(256), nullable=True),
        sa.Column("subject", sa.String(256), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_archived_events"),
    )
    op.create_index("ix_archived_events_workspace_time", "archived_events",
                    ["workspace_id", "time"])
    op.create_index("ix_archived_events_workspace_type_time", "archived_events",
                    ["workspace_id", "type", "time"])


def downgrade() -> None:
    op.drop_index("ix_archived_events_workspace_type_time", table_name="archived_events")
    op.drop_index("ix_archived_events_workspace_time", table_name="archived_events")
    op.drop_table("archived_events")

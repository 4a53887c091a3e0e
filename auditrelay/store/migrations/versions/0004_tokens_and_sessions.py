"""Several tokens per workspace, and server-side sessions of the settings page (#11.5).

Each workspace's one token hash moves to ``workspace_tokens`` (named "initial"; its
prefix is unknown, only the hash was kept), and ``workspaces.token_hash`` goes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from ulid import ULID

from auditrelay.store.db import UtcDateTime, utcnow

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tokens = op.create_table(
        "workspace_tokens",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workspace_id", sa.String(43), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_used_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE",
                                name="fk_workspace_tokens_workspace_id_workspaces"),
        sa.PrimaryKeyConstraint("id", name="pk_workspace_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_workspace_tokens_token_hash"),
    )
    op.create_index("ix_workspace_tokens_workspace_id", "workspace_tokens", ["workspace_id"])
    op.create_table(
        "page_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(43), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], ondelete="CASCADE",
                                name="fk_page_sessions_workspace_id_workspaces"),
        sa.ForeignKeyConstraint(["token_id"], ["workspace_tokens.id"], ondelete="CASCADE",
                                name="fk_page_sessions_token_id_workspace_tokens"),
        sa.PrimaryKeyConstraint("id_hash", name="pk_page_sessions"),
    )
    op.create_index("ix_page_sessions_workspace_id", "page_sessions", ["workspace_id"])
    op.create_index("ix_page_sessions_token_id", "page_sessions", ["token_id"])

    workspaces = sa.table("workspaces", sa.column("id", sa.String),
                          sa.column("token_hash", sa.String),
                          sa.column("created_at", UtcDateTime()))
    rows = op.get_bind().execute(
        sa.select(workspaces.c.id, workspaces.c.token_hash, workspaces.c.created_at)).all()
    if rows:
        op.bulk_insert(tokens, [
            {"id": f"tok_{str(ULID()).lower()}", "workspace_id": ws_id, "name": "initial",
             "prefix": None, "token_hash": token_hash, "created_at": created or utcnow(),
             "last_used_at": None}
            for ws_id, token_hash, created in rows])
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_constraint("uq_workspaces_token_hash", type_="unique")
        batch.drop_column("token_hash")


def downgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(64), nullable=True))
    # The oldest token of each workspace becomes its one token again; the others go.
    # A workspace without tokens keeps a placeholder no token hashes to (not hex).
    op.execute(sa.text(
        "UPDATE workspaces SET token_hash = (SELECT t.token_hash FROM workspace_tokens t "
        "WHERE t.workspace_id = workspaces.id ORDER BY t.created_at, t.id LIMIT 1)"))
    op.execute(sa.text("UPDATE workspaces SET token_hash = 'revoked-' || id "
                       "WHERE token_hash IS NULL"))
    with op.batch_alter_table("workspaces") as batch:
        batch.alter_column("token_hash", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_workspaces_token_hash", ["token_hash"])
    op.drop_index("ix_page_sessions_token_id", table_name="page_sessions")
    op.drop_index("ix_page_sessions_workspace_id", table_name="page_sessions")
    op.drop_table("page_sessions")
    op.drop_index("ix_workspace_tokens_workspace_id", table_name="workspace_tokens")
    op.drop_table("workspace_tokens")

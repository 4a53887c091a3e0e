"""Destination kinds (#13, contract section 5.1): ``kind``, ``options``, credentials.

Every destination stored so far is a ``webhook`` with no options and no credentials,
so the columns get those values and nothing needs the key of secrets at rest.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("destinations") as batch:
        batch.add_column(sa.Column("kind", sa.String(30), nullable=False,
                                   server_default="webhook"))
        batch.add_column(sa.Column("options", sa.JSON(), nullable=False,
                                   server_default="{}"))
        batch.add_column(sa.Column("credentials_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("destinations") as batch:
        batch.drop_column("credentials_encrypted")
        batch.drop_column("options")
        batch.drop_column("kind")

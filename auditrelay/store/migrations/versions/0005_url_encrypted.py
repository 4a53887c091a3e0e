"""Destination URLs encrypted at rest, like signing secrets and headers (#11.3).

For Slack, Sumo Logic or Datadog the URL's path or query is the credential.
``destinations.url`` gives way to ``url_encrypted`` (the box's ``v1:`` ciphertext) and
``url_hint`` (what reads show: ``https://hooks.slack.com/…``). Encrypting the rows
there are takes the box of secrets at rest, handed over by
``auditrelay.store.migrations.upgrade(engine, box=...)``; without one, a database that
has destinations is refused before anything changes.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

from auditrelay.schemas.destinations import url_hint
from auditrelay.schemas.errors import ConfigurationError

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_destinations = sa.table("destinations", sa.column("id", sa.String),
                         sa.column("url", sa.Text), sa.column("url_encrypted", sa.Text),
                         sa.column("url_hint", sa.String))


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_destinations.c.id, _destinations.c.url)).all()
    box: Any = context.config.attributes.get("box")
    if rows and box is None:
        # Checked before any change: the upgrade is refused whole.
        raise ConfigurationError(
            f"revision 0005 encrypts the URLs of the {len(rows)} destination(s) stored; "
            "it needs the key of secrets at rest: set AUDITRELAY_SECRET_KEY (or keep the "
            "development key under the var directory) and run the upgrade again")
    with op.batch_alter_table("destinations") as batch:
        batch.add_column(sa.Column("url_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("url_hint", sa.String(2048), nullable=True))
    for dest_id, url in rows:
        bind.execute(_destinations.update().where(_destinations.c.id == dest_id).values(
            url_encrypted=box.encrypt(url), url_hint=url_hint(url)))
    with op.batch_alter_table("destinations") as batch:
        batch.alter_column("url_encrypted", existing_type=sa.Text(), nullable=False)
        batch.alter_column("url_hint", existing_type=sa.String(2048), nullable=False)
        batch.drop_column("url")


def downgrade() -> None:
    box: Any = context.config.attributes.get("box")
    bind = op.get_bind()
    rows = bind.execute(sa.select(_destinations.c.id, _destinations.c.url_encrypted)).all()
    if rows and box is None:
        raise ConfigurationError(
            f"going back before revision 0005 decrypts the URLs of the {len(rows)} "
            "destination(s) stored; it needs AUDITRELAY_SECRET_KEY")
    with op.batch_alter_table("destinations") as batch:
        batch.add_column(sa.Column("url", sa.Text(), nullable=True))
    for dest_id, sealed in rows:
        bind.execute(_destinations.update().where(_destinations.c.id == dest_id).values(
            url=box.decrypt(sealed)))
    with op.batch_alter_table("destinations") as batch:
        batch.alter_column("url", existing_type=sa.Text(), nullable=False)
        batch.drop_column("url_hint")
        batch.drop_column("url_encrypted")

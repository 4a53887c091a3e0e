"""What the management API does, apart from HTTP: workspaces and destinations.

Every change writes its row and its outbox entries (config record, self-audit
event) in one transaction, through ``auditrelay.store.mutations`` as the
worker's changes do. A destination has no topic of its own: its batches are
keyed by its id on the shared ``audit.deliveries``. Validation happens
before anything is written: a refused request leaves no trace. A test delivery
is signed by ``auditrelay.wire.signing.request_headers``, as every delivery is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session
from ulid import ULID

from auditrelay.api import page_sessions
from auditrelay.api.deliveries import DeliveryView
from auditrelay.api.models import MASK, DestinationIn, DestinationOut, DestinationPatch
from auditrelay.api.tokens import hash_token, new_token, new_token_id, token_prefix
from auditrelay.schemas.builder import EncodedEvent, EventBuilder
from auditrelay.schemas.destinations import DestinationConfig, url_hint
from auditrelay.schemas.errors import (
    ConflictError,
    EntitlementError,
    InvalidInputError,
    NotFoundError,
    QuotaExceededError,
)
from auditrelay.schemas.ids import new_workspace_id
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.status import DeliveryAttempt
from auditrelay.store import outbox
from auditrelay.store.db import Destination, Workspace, WorkspaceToken, insert_new, utcnow
from auditrelay.store.mutations import (
    config_of,
    enqueue_audit,
    enqueue_config,
    forwarding,
    publish_change,
)
from auditrelay.wire.client import DeliveryClient, DeliveryResult
from auditrelay.wire.headers import validate_custom_headers
from auditrelay.wire.kinds import kind_named, kind_options, signed
from auditrelay.wire.kinds.base import Kind
from auditrelay.wire.kinds.send import Attempter
from auditrelay.wire.kinds.target import credentials_of
from auditrelay.wire.secrets import SecretBox
from auditrelay.wire.signing import (
    custom_headers,
    destination_url,
    generate_secret,
    new_batch_id,
)
from auditrelay.wire.ssrf import Resolver, validate_destination_url

log = logging.getLogger(__name__)

ROTATION_OVERLAP = timedelta(hours=24)
#: Tokens one workspace may hold: enough to rotate several integrations at once, and a
#: bound on what a leaked token can mint.
MAX_TOKENS_PER_WORKSPACE = 20
#: ``last_used_at`` is written at most this often per token, not on every request.
TOKEN_USE_RESOLUTION = timedelta(minutes=1)
VERSION = version("auditrelay")

# The statements of every request, built once: building one costs about as much CPU as
# running it (docs/scaling.md, part 5). Only the statements are kept; values are bound
# at each call, so nothing read from the database is reused.
_TOKEN_AND_WORKSPACE = (select(WorkspaceToken, Workspace)
                        .join(Workspace, Workspace.id == WorkspaceToken.workspace_id)
                        .where(WorkspaceToken.token_hash == bindparam("token_hash")))
_LOCK_SQLITE = (update(Workspace).where(Workspace.id == bindparam("workspace_id"))
                .values(plan=Workspace.plan).execution_options(synchronize_session=False))
_LOCK_FOR_UPDATE = (select(Workspace.id).where(Workspace.id == bindparam("workspace_id"))
                    .with_for_update())
_DESTINATION_COUNT = (select(func.count()).select_from(Destination)
                      .where(Destination.workspace_id == bindparam("workspace_id")))


def storable(text: str) -> bool:
    """Whether ``text`` can be a key at all: PostgreSQL refuses NUL in any text parameter."""
    return "\x00" not in text


def new_destination_id() -> str:
    return f"dst_{str(ULID()).lower()}"


def lock_workspace(session: Session, workspace_id: str) -> None:
    """Lock the workspace's row until the transaction ends: changes counted against
    its limits (destinations, tokens, the last token) then run one after the other.

    pysqlite opens its transaction at the first write, so a SELECT (FOR UPDATE or not)
    locks nothing there: a write that changes nothing takes SQLite's one write lock now.
    """
    sqlite = session.get_bind().dialect.name == "sqlite"
    session.execute(_LOCK_SQLITE if sqlite else _LOCK_FOR_UPDATE, {"workspace_id": workspace_id})


@dataclass(frozen=True)
class TestBatch:
    """What a test send sends: one event as a batch, to one destination."""

    config: DestinationConfig
    batch_id: str
    body: bytes


@dataclass(frozen=True)
class Actor:
    """Who made a change, as the self-audit events name them."""

    type: str
    id: str

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}


ADMIN_ACTOR = Actor("system", "admin")


def workspace_actor(workspace_id: str) -> Actor:
    return Actor("api_key", f"token:{workspace_id}")


class Service:
    """The API's operations, bound to one process's settings, keys and clients."""

    def __init__(self, settings: Settings, box: SecretBox, *, resolver: Resolver,
                 client: DeliveryClient | None = None, view: DeliveryView | None = None) -> None:
        self.settings = settings
        self.box = box
        self.resolver = resolver
        self.client = client
        self.view = view
        self.builder = EventBuilder(type_prefix=settings.event_type_prefix,
                                    source_base_url=settings.source_base_url)

    # -- workspaces ------------------------------------------------------------------------

    def create_workspace(self, session: Session, name: str, plan: str) -> tuple[Workspace, str]:
        if plan not in self.settings.plans:
            known = ", ".join(sorted(self.settings.plans))
            raise InvalidInputError(f"plan: unknown plan {plan!r}; known plans: {known}",
                                    field="plan")
        workspace = Workspace(id=new_workspace_id(), name=name, plan=plan, created_at=utcnow())
        session.add(workspace)
        # Without a relationship() SQLAlchemy does not order this insert before
        # a destination's or a token's, so write it now (the FK needs it first).
        session.flush()
        _, token = self.create_token(session, workspace, "initial")
        self._audit(session, workspace.id, "workspace", "created", ADMIN_ACTOR,
                    {"type": "workspace", "id": workspace.id}, {"plan": plan})
        return workspace, token

    @staticmethod
    def create_token(session: Session, workspace: Workspace,
                     name: str) -> tuple[WorkspaceToken, str]:
        """A new token of ``workspace``: its row, and the token itself (shown once)."""
        token = new_token()
        row = WorkspaceToken(id=new_token_id(), workspace_id=workspace.id, name=name,
                             prefix=token_prefix(token), token_hash=hash_token(token),
                             created_at=utcnow())
        session.add(row)
        session.flush()
        return row, token

    @staticmethod
    def token_row(session: Session, token: str) -> WorkspaceToken | None:
        return session.scalar(select(WorkspaceToken)
                              .where(WorkspaceToken.token_hash == hash_token(token)))

    @classmethod
    def authenticate(cls, session: Session, token: str) -> WorkspaceToken | None:
        """The row of ``token`` if it is a workspace token, its use noted.

        Nothing is cached: a token revoked by a committed request fails the next one.
        """
        row = cls.token_row(session, token)
        if row is not None:
            cls.note_token_use(row, utcnow())
        return row

    @classmethod
    def workspace_for_token(cls, session: Session, token: str) -> Workspace | None:
        """:meth:`authenticate`, and the token's workspace in the same query."""
        found = cls.token_and_workspace(session, token)
        if found is None:
            return None
        row, workspace = found
        cls.note_token_use(row, utcnow())
        return workspace

    @staticmethod
    def token_and_workspace(session: Session, token: str,
                            ) -> tuple[WorkspaceToken, Workspace] | None:
        """The row of ``token`` and its workspace, in one query; nothing noted."""
        found = session.execute(_TOKEN_AND_WORKSPACE,
                                {"token_hash": hash_token(token)}).first()
        return None if found is None else (found[0], found[1])

    @staticmethod
    def token_use_due(row: WorkspaceToken, now: datetime) -> bool:
        """Whether ``last_used_at`` is to move to ``now``: it is at least a minute old."""
        return row.last_used_at is None or now - row.last_used_at >= TOKEN_USE_RESOLUTION

    @classmethod
    def note_token_use(cls, row: WorkspaceToken, now: datetime) -> None:
        """Move ``last_used_at`` to ``now`` unless it is less than a minute old."""
        if cls.token_use_due(row, now):
            row.last_used_at = now

    @staticmethod
    def list_tokens(session: Session, workspace: Workspace) -> list[WorkspaceToken]:
        query = (select(WorkspaceToken).where(WorkspaceToken.workspace_id == workspace.id)
                 .order_by(WorkspaceToken.created_at, WorkspaceToken.id))
        return list(session.scalars(query))

    def issue_token(self, session: Session, workspace: Workspace, name: str,
                    actor: Actor) -> tuple[WorkspaceToken, str]:
        """Another token of ``workspace`` (at most ``MAX_TOKENS_PER_WORKSPACE``), audited."""
        count = self._lock_tokens(session, workspace)
        if count >= MAX_TOKENS_PER_WORKSPACE:
            raise QuotaExceededError(
                f"workspace {workspace.id} already holds {MAX_TOKENS_PER_WORKSPACE} tokens, "
                "the most it may; revoke one first")
        row, token = self.create_token(session, workspace, name)
        self._audit(session, workspace.id, "auth", "api_key_created", actor,
                    {"type": "api_key", "id": row.id}, {"name": row.name})
        return row, token

    def revoke_token(self, session: Session, workspace: Workspace, token_id: str,
                     actor: Actor, *, may_revoke_last: bool) -> None:
        """Delete a token of ``workspace`` and the page sessions it opened, audited.

        The workspace's last token is refused (409) unless ``may_revoke_last`` (the admin,
        who can still reach the workspace and create a new one): a workspace must not
        lock itself out by mistake.
        """
        count = self._lock_tokens(session, workspace)
        row = session.get(WorkspaceToken, token_id) if storable(token_id) else None
        if row is None or row.workspace_id != workspace.id:
            raise NotFoundError(f"no token {token_id} in workspace {workspace.id}")
        if count <= 1 and not may_revoke_last:
            raise ConflictError(
                f"{token_id} is the last token of workspace {workspace.id}: create another "
                "one first, then revoke this one")
        self._audit(session, workspace.id, "auth", "api_key_revoked", actor,
                    {"type": "api_key", "id": row.id}, {"name": row.name})
        page_sessions.close_for_token(session, row.id)
        session.delete(row)
        session.flush()

    @staticmethod
    def _lock_tokens(session: Session, workspace: Workspace) -> int:
        """Lock the workspace until the transaction ends, so that concurrent creations
        cannot pass the cap together, nor concurrent revocations the last-token rule;
        then its token count."""
        lock_workspace(session, workspace.id)
        return int(session.scalar(select(func.count()).select_from(WorkspaceToken)
                                  .where(WorkspaceToken.workspace_id == workspace.id)) or 0)

    def require_forwarding(self, workspace: Workspace) -> None:
        plan = self.settings.plans.get(workspace.plan)
        if plan is None or not plan.forwarding:
            with_forwarding = sorted(n for n, p in self.settings.plans.items() if p.forwarding)
            raise EntitlementError(
                f"the {workspace.plan} plan does not include event forwarding to destinations; "
                f"upgrade to a plan that does ({', '.join(with_forwarding) or 'none configured'})")

    # -- destinations ----------------------------------------------------------------------

    def list_destinations(self, session: Session, workspace: Workspace) -> list[Destination]:
        query = (select(Destination).where(Destination.workspace_id == workspace.id)
                 .order_by(Destination.created_at, Destination.id))
        return list(session.scalars(query))

    @staticmethod
    def get_destination(session: Session, workspace: Workspace, dest_id: str) -> Destination:
        dest = session.get(Destination, dest_id) if storable(dest_id) else None
        if dest is None or dest.workspace_id != workspace.id:
            raise NotFoundError(f"no destination {dest_id} in workspace {workspace.id}")
        return dest

    def create_destination(self, session: Session, workspace: Workspace, body: DestinationIn,
                           actor: Actor) -> tuple[Destination, str]:
        """The new destination, and its signing secret (which only webhooks use and show:
        other kinds are not signed, their receivers check the credentials)."""
        kind = kind_named(body.kind)
        url = kind.check_url(self._validated_url(body.url))
        options = kind_options(kind, body.options)
        credentials = kind.credentials.check(body.credentials, kind.name)
        headers = validate_custom_headers(body.headers)
        event_types = list(body.event_types) if "event_types" in body.model_fields_set \
            else self.default_event_types(kind)
        self._check_destination_quota(session, workspace)
        # Every row has one (the column is required); only webhooks ever use or show it.
        secret = generate_secret()
        now = utcnow()
        dest = Destination(
            id=new_destination_id(), workspace_id=workspace.id, name=body.name,
            kind=kind.name, options=options,
            credentials_encrypted=self._seal_credentials(credentials),
            url_encrypted=self.box.encrypt(url), url_hint=url_hint(url),
            description=body.description, enabled=body.enabled,
            disabled_reason=None if body.enabled else "manual",
            event_types=event_types, headers_encrypted=self._seal_headers(headers),
            secret_encrypted=self.box.encrypt(secret), version=1, created_at=now, updated_at=now)
        insert_new(session, dest)
        self.publish_config(session, workspace, dest)
        self._audit_destination(session, dest, "created", actor)
        return dest, secret

    def default_event_types(self, kind: Kind) -> list[str]:
        """The filter of a new destination of ``kind`` given none (Slack: the categories
        a human wants to read; others: every event)."""
        prefix = self.settings.event_type_prefix
        return [f"{prefix}.{category}.*" for category in kind.default_categories]

    def _check_destination_quota(self, session: Session, workspace: Workspace) -> None:
        """Refuse one destination more than the plan's ``max_destinations`` (409).

        The workspace is locked first, until the transaction ends, so that concurrent
        creations are counted one after the other and cannot pass the limit together.
        """
        lock_workspace(session, workspace.id)
        plan = self.settings.plans.get(workspace.plan)
        limit = plan.max_destinations if plan is not None else 0
        count = int(session.scalar(_DESTINATION_COUNT, {"workspace_id": workspace.id}) or 0)
        if count >= limit:
            raise QuotaExceededError(
                f"the {workspace.plan} plan allows at most {limit} destinations per workspace "
                f"and workspace {workspace.id} has {count}; delete one before adding another")

    def update_destination(self, session: Session, workspace: Workspace, dest_id: str,
                           patch: DestinationPatch, actor: Actor) -> Destination:
        dest = self.get_destination(session, workspace, dest_id)
        given = patch.model_fields_set
        if "name" in given and patch.name is not None:
            dest.name = patch.name
        self._patch_kind(dest, patch)
        if "description" in given:
            dest.description = patch.description
        if "event_types" in given and patch.event_types is not None:
            dest.event_types = list(patch.event_types)
        if "headers" in given and patch.headers is not None:
            dest.headers_encrypted = self._seal_headers(validate_custom_headers(patch.headers))
        toggled = "enabled" in given and patch.enabled is not None and patch.enabled != dest.enabled
        if toggled and patch.enabled is not None:
            dest.enabled = patch.enabled
            dest.disabled_reason = None if patch.enabled else "manual"
        self._publish_change(session, workspace, dest, "updated", actor)
        if toggled:
            self._audit_destination(session, dest, "enabled" if dest.enabled else "disabled",
                                    actor)
        return dest

    def _patch_kind(self, dest: Destination, patch: DestinationPatch) -> None:
        """Apply ``kind``, ``url``, ``options`` and ``credentials`` of a PATCH: all are
        checked against the kind the destination has after it, before anything changes.
        A new kind needs its own options and credentials (none are carried over)."""
        given = patch.model_fields_set
        kind = kind_named(patch.kind if "kind" in given and patch.kind is not None
                          else dest.kind)
        changed_kind = kind.name != dest.kind
        url = None
        if "url" in given and patch.url is not None:
            url = kind.check_url(self._validated_url(patch.url))
        elif changed_kind:
            url = kind.check_url(destination_url(self.config_of(None, dest), self.box))
        options = None
        if "options" in given and patch.options is not None:
            options = kind_options(kind, patch.options)
        elif changed_kind:
            options = kind_options(kind, {})
        credentials = None
        if "credentials" in given and patch.credentials is not None:
            credentials = kind.credentials.check(patch.credentials, kind.name)
        elif changed_kind:
            credentials = kind.credentials.check({}, kind.name)
        dest.kind = kind.name
        if url is not None:
            dest.url_encrypted, dest.url_hint = self.box.encrypt(url), url_hint(url)
        if options is not None:
            dest.options = options
        if credentials is not None:
            dest.credentials_encrypted = self._seal_credentials(credentials)

    def delete_destination(self, session: Session, workspace: Workspace, dest_id: str,
                           actor: Actor) -> None:
        dest = self.get_destination(session, workspace, dest_id)
        names = self.settings.topics
        outbox.enqueue_record(session, names.destinations, dest.id.encode(), None)
        self._audit_destination(session, dest, "deleted", actor)
        session.delete(dest)

    def rotate_secret(self, session: Session, workspace: Workspace, dest_id: str,
                      actor: Actor) -> str:
        dest = self.get_destination(session, workspace, dest_id)
        if not signed(dest.kind):
            raise ConflictError(
                f"{dest.id} is a {dest.kind} destination: it is not signed, so it has no "
                "secret to rotate; PATCH its credentials to replace them")
        secret = generate_secret()
        dest.previous_secret_encrypted = dest.secret_encrypted
        dest.previous_secret_expires_at = utcnow() + ROTATION_OVERLAP
        dest.secret_encrypted = self.box.encrypt(secret)
        self._publish_change(session, workspace, dest, "secret_rotated", actor)
        return secret

    def custom_headers(self, dest: Destination) -> dict[str, str]:
        return custom_headers(dest.headers_encrypted, self.box)

    def recent_attempts(self, dest_id: str, limit: int) -> list[DeliveryAttempt]:
        return self.view.attempts.recent(dest_id, limit) if self.view is not None else []

    def to_out(self, dest: Destination) -> DestinationOut:
        status = self.view.status(dest.id) if self.view is not None else None
        return DestinationOut(
            id=dest.id, workspace_id=dest.workspace_id, name=dest.name, kind=dest.kind,
            options=dict(dest.options or {}),
            credentials_set=sorted(credentials_of(dest.credentials_encrypted, self.box)),
            url=dest.url_hint,
            description=dest.description, enabled=dest.enabled,
            event_types=list(dest.event_types),
            headers=dict.fromkeys(self.custom_headers(dest), MASK),
            status="active" if dest.enabled else "disabled",
            disabled_reason=dest.disabled_reason, created_at=dest.created_at,
            updated_at=dest.updated_at,
            last_delivery_at=status.last_delivery_at if status else None,
            last_delivery_ok=status.last_delivery_ok if status else None,
            last_error=status.last_error if status else None)

    # -- test delivery ---------------------------------------------------------------------

    def prepare_test(self, session: Session, dest: Destination,
                     actor: Actor) -> TestBatch:
        """A test batch for ``dest`` (one ``webhook.test_sent`` event, also self-audited)."""
        event = self._event(dest.workspace_id, "webhook", "test_sent", actor,
                            {"type": "destination", "id": dest.id}, {"destination": dest.name})
        outbox.enqueue_event(session, self.settings.topics.events, event)
        config = self.config_of(session.get(Workspace, dest.workspace_id), dest)
        return TestBatch(config, new_batch_id(), b"[" + event.value + b"]")

    async def send_test(self, test: TestBatch) -> tuple[DeliveryResult, str]:
        """Send the test batch in the destination's kind, as a delivery would: the result,
        and the receiver's verdict in words."""
        if self.client is None:
            raise RuntimeError("this service has no delivery client")
        attempter = Attempter(self.client, self.box, VERSION)
        result = await attempter.send(test.config, test.body, test.batch_id, 1,
                                      lambda: datetime.now(UTC))
        if result.ok and result.rejected is None:
            words = kind_named(test.config.kind).accepted_words(1)
        else:
            words = result.error or (result.rejected.detail if result.rejected else "failed")
        return result, words

    # -- internals -------------------------------------------------------------------------

    def _validated_url(self, url: str) -> str:
        return validate_destination_url(
            url, resolver=self.resolver, allow_private_cidrs=self.settings.allow_private_cidrs,
            allowed_ports=self.settings.allowed_destination_ports).url

    def _seal_credentials(self, credentials: Mapping[str, str]) -> str | None:
        return self.box.encrypt(json.dumps(dict(credentials))) if credentials else None

    def _seal_headers(self, headers: Mapping[str, str]) -> str | None:
        return self.box.encrypt(json.dumps(dict(headers))) if headers else None

    def publish_config(self, session: Session, workspace: Workspace, dest: Destination) -> None:
        enqueue_config(session, self.settings, workspace, dest)

    def config_of(self, workspace: Workspace | None, dest: Destination) -> DestinationConfig:
        """The record of ``dest`` on audit.destinations."""
        return config_of(dest, forwarding=forwarding(self.settings, workspace),
                         workspace_name=workspace.name if workspace is not None else "")

    def _publish_change(self, session: Session, workspace: Workspace, dest: Destination,
                        action: str, actor: Actor) -> None:
        publish_change(session, self.settings, workspace, dest, action, actor.as_dict(),
                       builder=self.builder)

    def _audit_destination(self, session: Session, dest: Destination, action: str,
                           actor: Actor) -> None:
        enqueue_audit(session, self.settings, dest, action, actor.as_dict(), builder=self.builder)

    def _audit(self, session: Session, workspace_id: str, category: str, action: str,
               actor: Actor, target: Mapping[str, str], metadata: Mapping[str, Any]) -> None:
        event = self._event(workspace_id, category, action, actor, target, metadata)
        outbox.enqueue_event(session, self.settings.topics.events, event)

    def _event(self, workspace_id: str, category: str, action: str, actor: Actor,
               target: Mapping[str, str], metadata: Mapping[str, Any]) -> EncodedEvent:
        return self.builder.build(workspace_id, category, action, actor=actor.as_dict(),
                                  target=target, metadata=metadata, time=datetime.now(UTC))

"""``slack``: one Slack message per batch, through an incoming webhook.

Vendor documentation (read 2026-12-02):
- "Sending messages using incoming webhooks",
  https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks (the URL,
  the JSON body with ``text`` and ``blocks``);
- "Improving error conditions for Incoming Webhooks",
  https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks
  (the plain-text error bodies and their statuses: 400 ``invalid_payload`` and
  ``user_not_found``, 403 ``action_prohibited``, 404 ``channel_not_found``, 410
  ``channel_is_archived``, 500 ``rollup_error``); the current page adds
  ``no_service`` (404: the webhook was disabled or removed), ``no_team``,
  ``team_disabled``, ``invalid_token`` (403), ``posting_to_general_channel_denied``
  (403), ``too_many_attachments``/``no_text`` (400);
- "Rate limits", https://api.slack.com/docs/rate-limits: about one message a second
  per webhook, bursts tolerated briefly; beyond it HTTP 429 with ``Retry-After``;
- Block Kit reference, https://docs.slack.dev/reference/block-kit/blocks: at most 50
  blocks a message, a section's text at most 3 000 characters; ``chat.postMessage``
  truncates a message's ``text`` beyond 40 000 characters.

What it does with them:

- **URL**: the incoming-webhook URL is the credential (encrypted and masked like every
  URL). It must be ``https://hooks.slack.com/services/...``; any other host is refused
  (422 naming ``url``), except an IP literal the operator allowed (tests' fake Slack,
  see ``auditrelay.wire.kinds.loopback``), whose path must still be ``/services/...``.
- **Message**: ``text`` is the header line ("12 audit events in Acme", the name linked
  to ``{base_url}/workspaces/{id}``, the events' ``source``), also the notification's
  words; ``blocks`` are that line, then one short line per event (who did what to
  what, when), at most :data:`MAX_BLOCKS`; what does not fit is counted in a last
  block ("and 37 more"). Every event is in a line or in that count.
- **Pace**: one message a second per destination (``Limits.min_interval_seconds``,
  waited for by ``auditrelay.wire.kinds.send.Pacer``): batches wait, none is dropped.
- **Answers**: 200 ``ok`` delivered; 429 retried after ``Retry-After``; 400
  (``invalid_payload`` ...) dead-letters the batch with Slack's words; 403, 404 and
  410 (channel gone or archived, webhook removed, posting prohibited) disable the
  destination with the reason in words; 5xx and anything else is retried.
- **Filters**: a new Slack destination given no ``event_types`` gets the categories a
  person wants to read (:attr:`Slack.default_categories`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds.base import Batch, Event, Kind, Limits, Request, Target, Verdict
from auditrelay.wire.kinds.loopback import operator_allowed_literal

__all__ = ["MAX_BLOCKS", "Slack", "message_of"]

HOST = "hooks.slack.com"
#: Blocks a message may have (Block Kit).
MAX_BLOCKS = 50
#: Characters of a section block's text (Block Kit), and of a message's ``text``.
MAX_SECTION_CHARS = 3000
MAX_TEXT_CHARS = 40_000
#: Characters of one event's line: short, and 48 of them stay far below 40 000.
MAX_LINE_CHARS = 300
_PATH = re.compile(r"/services/[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_CODE = re.compile(r"[a-z_]{2,60}")

#: Slack's error codes that mean the webhook cannot post any more, in words.
_GONE: dict[str, str] = {
    "channel_not_found": "Slack says the webhook's channel does not exist any more",
    "channel_is_archived": "Slack says the webhook's channel is archived",
    "action_prohibited": "Slack's workspace settings prohibit this webhook from posting",
    "no_service": "Slack says the webhook was disabled or removed",
    "no_team": "Slack says the webhook's workspace does not exist any more",
    "team_disabled": "Slack says the webhook's workspace is disabled",
    "invalid_token": "Slack says the webhook's token is invalid",
    "posting_to_general_channel_denied":
        "Slack allows only admins to post to the webhook's channel",
}


class Slack(Kind):
    name: ClassVar[str] = "slack"
    label: ClassVar[str] = "Slack"
    # One message per batch whatever its size (a batch holds at most 100 events).
    limits: ClassVar[Limits] = Limits(max_events=1_000_000, max_bytes=None,
                                      min_interval_seconds=1.0)
    default_categories: ClassVar[tuple[str, ...]] = ("auth", "permission", "team_member",
                                                     "billing")

    def check_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.query or not _PATH.fullmatch(parts.path):
            raise InvalidInputError(
                "url: a Slack incoming-webhook URL looks like "
                "https://hooks.slack.com/services/T.../B.../...", field="url")
        if (parts.scheme == "https" and parts.netloc == HOST) or operator_allowed_literal(url):
            return url
        raise InvalidInputError(
            f"url: a Slack incoming-webhook URL is on https://{HOST}/services/...",
            field="url")

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        message = message_of([batch.events[i] for i in events],
                             target.config.workspace_name or target.config.workspace_id)
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def read(self, reply: Reply, request: Request) -> Verdict:
        status = reply.status
        if status is None:
            return Verdict("retry", reply.error)
        if 200 <= status < 300:
            return Verdict("delivered")
        code = _code(reply)
        if status == 429:
            return Verdict("retry", "Slack is rate limiting the webhook (HTTP 429)",
                           retry_after_seconds=reply.retry_after_seconds)
        if status == 400:
            return Verdict("rejected", f"Slack refused the message ({code or 'HTTP 400'})")
        if status in (403, 404, 410):
            words = _GONE.get(code, f"Slack refused the webhook for good (HTTP {status})")
            return Verdict("stop", f"{words} ({code})" if code else words)
        return Verdict("retry", f"Slack answered HTTP {status}" + (f" ({code})" if code else ""),
                       retry_after_seconds=reply.retry_after_seconds)

    def accepted_words(self, events: int) -> str:
        return "Slack posted the message" if events == 1 else \
            f"Slack posted the message about {events} events"


def message_of(events: Sequence[Event], workspace: str) -> dict[str, Any]:
    """The Slack message of ``events`` (see the module docstring)."""
    count = len(events)
    noun = "audit event" if count == 1 else "audit events"
    source = next((e.data["source"] for e in events if isinstance(e.data.get("source"), str)),
                  None)
    name = _escape(workspace)
    linked = f"<{_link(source)}|{name}>" if source else name
    header = f"{count} {noun} in {linked}"
    blocks: list[dict[str, Any]] = [_section(header)]
    room = MAX_BLOCKS - 1 if count <= MAX_BLOCKS - 1 else MAX_BLOCKS - 2
    shown = events[:room]
    blocks.extend(_section(line_of(event)) for event in shown)
    rest = count - len(shown)
    if rest:
        blocks.append({"type": "context",
                       "elements": [{"type": "mrkdwn", "text": f"and {rest} more"}]})
    return {"text": header[:MAX_TEXT_CHARS], "blocks": blocks}


def line_of(event: Event) -> str:
    """One event as a short line: who did what to what, when."""
    actor_id = event.field("data", "actor", "id")
    actor_type = event.field("data", "actor", "type")
    who = f"*{_escape(str(actor_id))}*" if actor_id else "*someone*"
    if actor_type and actor_type != "user":
        who += f" ({_escape(str(actor_type).replace('_', ' '))})"
    category = event.field("data", "action", "category")
    action = event.field("data", "action", "action")
    did = f"{category}.{action}" if category and action else str(event.data.get("type", "?"))
    what = ""
    target_type, target_id = event.field("data", "target", "type"), event.field("data",
                                                                              "target", "id")
    if target_type or target_id:
        what = f" on {_escape(str(target_type or ''))} `{_escape(str(target_id or ''))}`"
    line = f"{who} `{_escape(did)}`{what} at {_when(event.data.get('time'))}"
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS - 1] + "\u2026"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_SECTION_CHARS]}}


def _when(value: Any) -> str:
    if not isinstance(value, str):
        return "an unknown time"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _escape(value[:40])
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _escape(text: str) -> str:
    """Text as Slack's mrkdwn shows it literally (its three control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str) -> str:
    # ``|`` and ``>`` end a link's URL in mrkdwn; an event's source has neither, but a
    # producer's setting could.
    return url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")


def _code(reply: Reply) -> str:
    """Slack's error code from a plain-text body (``channel_not_found``), or ''."""
    text = reply.body[:200].decode("utf-8", "replace").strip()
    return text if _CODE.fullmatch(text) else ""

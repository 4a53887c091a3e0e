"""A strict fake of Slack's incoming webhooks, from Slack's public documentation.

Sources: "Sending messages using incoming webhooks" (docs.slack.dev), "Improving
error conditions for Incoming Webhooks" (api.slack.com changelog 2016-05-17), "Rate
limits" (api.slack.com/docs/rate-limits), the Block Kit reference. This app enforces:

- ``POST`` to a known webhook path (``/services/T.../B.../secret``), else 404
  ``no_service``; ``Content-Type: application/json``, a JSON object with a non-empty
  ``text`` and/or ``blocks``, else 400 ``invalid_payload`` (``no_text`` when neither);
- Block Kit limits: at most 50 blocks, each a known type (section, context, header,
  divider); a section's text at most 3 000 characters, a context at most 10 elements,
  a header's text at most 150; the message's ``text`` at most 40 000: else 400
  ``invalid_blocks`` or ``invalid_payload``;
- one message a second per webhook: a message less than ``interval`` after the last
  one taken is answered 429 with ``Retry-After: 1`` (Slack tolerates short bursts;
  this fake does not, so a sender that relies on them is caught);
- 200 ``ok`` (``text/plain``) when taken.

A test breaks a webhook with ``state(path).answer = (410, "channel_is_archived")``
(every later message gets it) or ``state(path).forced.append((429, "rate_limited"))``
(the next one gets it), and reads ``state(path).messages`` (taken, with the
moment they arrived) and ``.requests``; ``snapshot()`` has every exchange.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.receivers.recording import Answer, RecordingApp

__all__ = ["Message", "SlackHooks", "Webhook"]

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_HEADER_CHARS = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT_CHARS = 40_000
_TEXT_TYPES = ("mrkdwn", "plain_text")


@dataclass(frozen=True)
class Message:
    at: float
    payload: dict[str, Any]


@dataclass
class Webhook:
    """One incoming webhook's state."""

    #: When set, every later request gets this ``(status, error code)``.
    answer: tuple[int, str] | None = None
    #: Answers to the next requests, one each, before anything else is checked.
    forced: list[tuple[int, str]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    #: ``(moment, status, Slack's answer)`` of every request.
    requests: list[tuple[float, int, str]] = field(default_factory=list)
    last: float | None = None


class SlackHooks(RecordingApp):
    """The ASGI app: several webhooks, by path."""

    def __init__(self, *paths: str, interval: float = 1.0, tolerance: float = 0.0) -> None:
        super().__init__()
        self.hooks = {path: Webhook() for path in paths}
        self.interval = interval
        #: Seconds a message may come early (none: the sender counts its pace from the
        #: reply, so it can keep a whole second between arrivals).
        self.tolerance = tolerance

    def state(self, path: str) -> Webhook:
        return self.hooks[path]

    def messages(self, path: str) -> list[Message]:
        with self.lock:
            return list(self.hooks[path].messages)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        hook = self.hooks.get(path.partition("?")[0])
        now = time.monotonic()
        extra: tuple[tuple[str, str], ...] = ()
        if hook is None or method != "POST":
            status, code = 404, "no_service"
        elif hook.forced:
            status, code = hook.forced.pop(0)
        elif hook.answer is not None:
            status, code = hook.answer
        else:
            status, code = _check(headers, body)
            if status == 200 and hook.last is not None \
                    and now - hook.last < self.interval - self.tolerance:
                status, code = 429, "rate_limited"
            if status == 200:
                hook.last = now
                hook.messages.append(Message(now, json.loads(body)))
        if status == 429:
            extra = (("retry-after", "1"),)
        if hook is not None:
            hook.requests.append((now, status, code))
        return Answer(status, code.encode(), extra, "text/plain; charset=utf-8")


def _check(headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """``(200, "ok")`` for a valid message, else Slack's status and error code."""
    if not headers.get("content-type", "").startswith("application/json"):
        return 400, "invalid_payload"
    if headers.get("content-encoding", "identity") != "identity":
        return 400, "invalid_payload"
    try:
        payload = json.loads(body)
    except ValueError:
        return 400, "invalid_payload"
    if not isinstance(payload, dict):
        return 400, "invalid_payload"
    text, blocks = payload.get("text"), payload.get("blocks")
    if text is None and blocks is None:
        return 400, "no_text"
    if text is not None and (not isinstance(text, str) or not text
                             or len(text) > MAX_TEXT_CHARS):
        return 400, "invalid_payload"
    if blocks is not None and not _valid_blocks(blocks):
        return 400, "invalid_blocks"
    return 200, "ok"


def _valid_blocks(blocks: Any) -> bool:
    if not isinstance(blocks, list) or not 0 < len(blocks) <= MAX_BLOCKS:
        return False
    return all(isinstance(block, dict) and _valid_block(block) for block in blocks)


def _valid_block(block: dict[str, Any]) -> bool:
    kind = block.get("type")
    if kind == "divider":
        return True
    if kind == "section":
        return _valid_text(block.get("text"), MAX_SECTION_CHARS)
    if kind == "header":
        text = block.get("text")
        return _valid_text(text, MAX_HEADER_CHARS) and isinstance(text, dict) \
            and text.get("type") == "plain_text"
    if kind == "context":
        elements = block.get("elements")
        return (isinstance(elements, list) and 0 < len(elements) <= MAX_CONTEXT_ELEMENTS
                and all(_valid_text(e, MAX_SECTION_CHARS) for e in elements))
    return False


def _valid_text(value: Any, limit: int) -> bool:
    return (isinstance(value, dict) and value.get("type") in _TEXT_TYPES
            and isinstance(value.get("text"), str) and 0 < len(value["text"]) <= limit)

"""The demo of ``auditrelay run --demo`` (and ``make run``): events visibly flow.

``setup`` creates (once) an Enterprise workspace and a destination pointing at
the demo receiver on 127.0.0.1, remembering both in ``var/demo.json`` (mode
0600: it holds the signing secret the receiver verifies with). ``receiver``
is a plain HTTP server that checks each batch's Standard Webhooks signature
and prints it. ``producer`` emits a steady trickle of varied audit events.
"""

from __future__ import annotations

import hmac
import json
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from auditrelay.schemas.settings import Settings

DEMO_WORKSPACE = "demo"

_SAMPLES: tuple[tuple[str, str, str], ...] = (
    ("auth", "login_succeeded", "user"),
    ("auth", "login_failed", "user"),
    ("permission", "granted", "user"),
    ("workflow", "started", "service_account"),
    ("billing", "payment_succeeded", "system"),
    ("team_member", "joined", "user"),
    ("instance", "drift_detected", "system"),
)


@dataclass(frozen=True)
class DemoState:
    workspace_id: str
    destination_id: str
    secret: str
    receiver_port: int


def state_path(settings: Settings) -> Path:
    return settings.var_dir / "demo.json"


def setup(settings: Settings, receiver_port: int) -> DemoState:
    """The demo workspace and destination, created on first use and reused after."""
    path = state_path(settings)
    if path.exists():
        state = DemoState(**json.loads(path.read_text()))
        if state.receiver_port == receiver_port:
            return state
    from auditrelay.api.models import DestinationIn
    from auditrelay.api.service import ADMIN_ACTOR, Service
    from auditrelay.store.engine import Store, checked_engine
    from auditrelay.wire.secrets import box_from_settings

    # `auditrelay run` upgraded the database before calling this.
    store = Store(checked_engine(settings.database_url))
    service = Service(settings, box_from_settings(settings), resolver=_loopback_only)
    with store.transaction() as session:
        workspace, _ = service.create_workspace(session, DEMO_WORKSPACE, "enterprise")
        body = DestinationIn(name="demo receiver", url=f"http://127.0.0.1:{receiver_port}/hook",
                             description="prints every batch it receives")
        dest, secret = service.create_destination(session, workspace, body, ADMIN_ACTOR)
    store.dispose()
    state = DemoState(workspace.id, dest.id, secret, receiver_port)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(state), handle)
    return state


def _loopback_only(host: str, port: int) -> list[Any]:
    raise RuntimeError(f"the demo destination is an IP literal; no lookup of {host} expected")


def signature_ok(secret: str, headers: dict[str, str], body: bytes,
                 tolerance: float = 300.0) -> bool:
    """Standard Webhooks verification, as a receiver would do it."""
    from auditrelay.wire.signing import sign

    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > tolerance:
        return False
    expected = sign([secret], msg_id, int(stamp), body)
    return any(hmac.compare_digest(expected, given)
               for given in headers.get("webhook-signature", "").split())


def describe_batch(body: bytes) -> str:
    events = json.loads(body)
    # pro.atmos.auth.login_failed -> auth.login_failed
    kinds = Counter(".".join(str(e.get("type", "?")).split(".")[-2:]) for e in events)
    return f"{len(events):>3} events: " + ", ".join(f"{k} x{n}" for k, n in kinds.most_common(4))


@click.group(hidden=True)
def demo() -> None:
    """Pieces of `auditrelay run --demo`."""


@demo.command("receiver")
@click.option("--port", type=int, required=True)
@click.pass_obj
def receiver(settings: Settings, port: int) -> None:
    """Serve the demo receiver: verify each batch's signature and print it."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    secret = DemoState(**json.loads(state_path(settings).read_text())).secret

    async def hook(request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        ok = signature_ok(secret, headers, body)
        click.echo(f"[receiver] {headers.get('webhook-id', '?')}  "
                   f"signature {'ok ' if ok else 'BAD'}  {describe_batch(body)}")
        return Response(status_code=204 if ok else 401)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@demo.command("producer")
@click.option("--rate", type=float, default=5.0, show_default=True, help="Events per second.")
@click.pass_obj
def producer(settings: Settings, rate: float) -> None:
    """Emit varied audit events for the demo workspace until stopped."""
    from auditrelay.producer import AuditProducer, ProducerConfig

    state = DemoState(**json.loads(state_path(settings).read_text()))
    rng = random.Random()  # noqa: S311 - picks demo event kinds, nothing secret
    config = ProducerConfig.from_settings(settings, client_id="auditrelay-demo")
    with AuditProducer(config) as out:
        while True:
            category, action, actor_type = rng.choice(_SAMPLES)
            out.emit(state.workspace_id, category, action,
                     actor={"type": actor_type, "id": f"{actor_type}_{rng.randint(1, 9)}"},
                     metadata={"demo": True})
            out.poll(0)
            time.sleep(1.0 / rate)

"""``/v1/workspaces/{ws}/destinations``: a workspace's webhook destinations.

Every route needs a plan with forwarding (``Ws``). A test send holds no
transaction while it waits on the receiver: it commits its self-audit event
first (``committed``), then sends. Test sends are rate-limited per destination and
per workspace (429, ``auditrelay.api.ratelimit``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from auditrelay.api.deps import (
    DestinationId,
    ServiceDep,
    Tx,
    Who,
    WorkspaceId,
    Ws,
    committed,
    forwarding_workspace_of,
)
from auditrelay.api.models import (
    DeliveryList,
    DestinationCreated,
    DestinationIn,
    DestinationList,
    DestinationOut,
    DestinationPatch,
    SecretOut,
    TestResult,
)
from auditrelay.api.ratelimit import ApiLimits
from auditrelay.api.service import TestBatch
from auditrelay.wire.kinds import signed

BASE = "/v1/workspaces/{ws}/destinations"

router = APIRouter()


@router.get(BASE, response_model=DestinationList)
def list_destinations(ws: Ws, session: Tx, service: ServiceDep) -> DestinationList:
    return DestinationList(items=[service.to_out(d)
                                  for d in service.list_destinations(session, ws)])


@router.post(BASE, status_code=201, response_model=DestinationCreated)
def create_destination(ws: Ws, who: Who, body: DestinationIn, session: Tx,
                       service: ServiceDep) -> DestinationCreated:
    dest, secret = service.create_destination(session, ws, body, who.actor)
    created = DestinationCreated(**service.to_out(dest).model_dump(),
                                 secret=secret if signed(dest.kind) else None)
    # Commit in this thread: the workspace lock (on SQLite, the one write lock) is then
    # held for the creation alone, not across the hops through the event loop to the
    # thread running Tx's exit, which finds the transaction done and wakes the outbox.
    session.commit()
    return created


@router.get(BASE + "/{dest_id}", response_model=DestinationOut)
def get_destination(ws: Ws, dest_id: DestinationId, session: Tx,
                    service: ServiceDep) -> DestinationOut:
    return service.to_out(service.get_destination(session, ws, dest_id))


@router.patch(BASE + "/{dest_id}", response_model=DestinationOut)
def patch_destination(ws: Ws, who: Who, dest_id: DestinationId, body: DestinationPatch,
                      session: Tx, service: ServiceDep) -> DestinationOut:
    return service.to_out(service.update_destination(session, ws, dest_id, body, who.actor))


@router.delete(BASE + "/{dest_id}", status_code=204, response_class=Response)
def delete_destination(ws: Ws, who: Who, dest_id: DestinationId, session: Tx,
                       service: ServiceDep) -> Response:
    service.delete_destination(session, ws, dest_id, who.actor)
    return Response(status_code=204)


@router.get(BASE + "/{dest_id}/deliveries", response_model=DeliveryList)
def list_deliveries(ws: Ws, dest_id: DestinationId, session: Tx, service: ServiceDep,
                    limit: Annotated[int, Query(ge=1, le=50)] = 50) -> DeliveryList:
    """Recent delivery attempts of the destination, newest first (the last day)."""
    dest = service.get_destination(session, ws, dest_id)
    return DeliveryList(items=service.recent_attempts(dest.id, limit))


@router.post(BASE + "/{dest_id}/rotate-secret", response_model=SecretOut)
def rotate_secret(ws: Ws, who: Who, dest_id: DestinationId, session: Tx,
                  service: ServiceDep) -> SecretOut:
    return SecretOut(secret=service.rotate_secret(session, ws, dest_id, who.actor))


@router.post(BASE + "/{dest_id}/test", response_model=TestResult)
async def test_destination(ws: WorkspaceId, who: Who, dest_id: DestinationId,
                           request: Request, service: ServiceDep) -> TestResult:
    def prepare() -> TestBatch:
        with committed(request.app) as session:
            found = forwarding_workspace_of(ws, who, session, service)
            dest = service.get_destination(session, found, dest_id)
            # Only once the caller may test it: nobody spends another tenant's allowance.
            limits: ApiLimits = request.app.state.limits
            limits.take_test_send(found.id, dest.id)
            return service.prepare_test(session, dest, who.actor)

    result, words = await service.send_test(await run_in_threadpool(prepare))
    return TestResult(delivered=result.ok, status_code=result.status_code,
                      latency_ms=result.latency_ms, error=result.error, message=words)

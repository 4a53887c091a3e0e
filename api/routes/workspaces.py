"""``/v1/workspaces``: creating a workspace (the admin token only)."""

from __future__ import annotations

from fastapi import APIRouter

from auditrelay.api.deps import ServiceDep, Tx, Who
from auditrelay.api.models import WorkspaceCreated, WorkspaceIn
from auditrelay.schemas.errors import PermissionDeniedError

router = APIRouter()


@router.post("/v1/workspaces", status_code=201, response_model=WorkspaceCreated)
def create_workspace(body: WorkspaceIn, who: Who, session: Tx,
                     service: ServiceDep) -> WorkspaceCreated:
    if not who.admin:
        if service.settings.admin_token is None:
            raise PermissionDeniedError("the admin API is off: AUDITRELAY_ADMIN_TOKEN is unset")
        raise PermissionDeniedError("this endpoint needs the admin token")
    created, token = service.create_workspace(session, body.name, body.plan)
    return WorkspaceCreated(id=created.id, name=created.name, plan=created.plan, token=token)

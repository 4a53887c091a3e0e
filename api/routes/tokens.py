"""``/v1/workspaces/{ws}/tokens``: a workspace's API tokens (docs/api.md).

A workspace holds several tokens, so that one is rotated without downtime: create
the new one, move the clients to it, revoke the old one. Tokens are no forwarding
feature: every plan manages its own (``Readable``), and so does the admin. Lists
never show a token nor its hash; a new token is shown once, in the create response.
Revocation is committed before the 204 is sent and nothing caches tokens, so the
revoked token fails (401) from the very next request on; its page sessions go with it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from auditrelay.api.deps import Readable, ServiceDep, TokenId, Tx, Who
from auditrelay.api.models import TokenCreated, TokenIn, TokenList, TokenOut

BASE = "/v1/workspaces/{ws}/tokens"

router = APIRouter()


@router.get(BASE, response_model=TokenList)
def list_tokens(ws: Readable, session: Tx, service: ServiceDep) -> TokenList:
    return TokenList(items=[
        TokenOut(id=t.id, name=t.name, prefix=t.prefix, created_at=t.created_at,
                 last_used_at=t.last_used_at)
        for t in service.list_tokens(session, ws)])


@router.post(BASE, status_code=201, response_model=TokenCreated)
def create_token(ws: Readable, who: Who, body: TokenIn, session: Tx,
                 service: ServiceDep) -> TokenCreated:
    row, token = service.issue_token(session, ws, body.name, who.actor)
    return TokenCreated(id=row.id, name=row.name, prefix=row.prefix,
                        created_at=row.created_at, token=token)


@router.delete(BASE + "/{token_id}", status_code=204, response_class=Response)
def revoke_token(ws: Readable, who: Who, token_id: TokenId, session: Tx,
                 service: ServiceDep) -> Response:
    # Only the admin may revoke a workspace's last token: it can still reach the
    # workspace and create a new one, a workspace token holder could not.
    service.revoke_token(session, ws, token_id, who.actor, may_revoke_last=who.admin)
    return Response(status_code=204)

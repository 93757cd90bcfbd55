"""Policies, their evaluation, and the checks and approvals that satisfy them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ztdp.api.access import (
    READ,
    Access,
    admin,
    recorder,
    withdraw,
)
from ztdp.api.keys import CATALOG, RUNTIME, identity_of
from ztdp.api.routing import Reply
from ztdp.api.v1.common import (
    READ_ERRORS,
    WRITE,
    deletes,
    if_match,
    param,
    router,
)
from ztdp.contracts import (
    Approval,
    Check,
    Policy,
    TransitionRequest,
)
from ztdp.graph import NodeKind
from ztdp.policy import Decision, Transition


def _approval_env(body: Any) -> str:
    return str(body.spec.environment)


@router.add(
    "POST",
    "/v1/policies",
    "Create a policy",
    tag="policies",
    body=Policy,
    responses={201: Policy, **WRITE},
    access=admin("create policies"),
)
async def create_policy(request: web.Request, body: Policy) -> Reply:
    return 201, await request.app[CATALOG].create_policy(body)


@router.add(
    "GET",
    "/v1/policies",
    "List policies",
    tag="policies",
    responses={200: list[Policy]},
    access=READ,
)
async def list_policies(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_policies()


@router.add(
    "GET",
    "/v1/policies/{id}",
    "Read a policy",
    tag="policies",
    responses={200: Policy, **READ_ERRORS},
    access=READ,
)
async def get_policy(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_policy(param(request, "id"))


@router.add(
    "PUT",
    "/v1/policies/{id}",
    "Update a policy",
    tag="policies",
    body=Policy,
    responses={200: Policy, **WRITE},
    if_match=True,
    access=admin("change policies"),
)
async def update_policy(request: web.Request, body: Policy) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.update_policy(param(request, "id"), body, if_match=if_match(request))


@router.add(
    "POST",
    "/v1/policies/evaluate",
    "Evaluate a deploy against policy without making it",
    tag="policies",
    body=TransitionRequest,
    responses={200: Decision, **WRITE},
    access=READ,
)
async def evaluate_policies(request: web.Request, body: TransitionRequest) -> Reply:
    # Evaluated as if the caller asked for the deploy: its own approvals do not count.
    transition = Transition(**body.model_dump(), actor=identity_of(request).principal)
    return 200, await request.app[RUNTIME].evaluate(transition)


@router.add(
    "POST",
    "/v1/checks",
    "Record a check result for a version",
    tag="policies",
    body=Check,
    responses={201: Check, **WRITE},
    access=recorder("record checks of this application"),
)
async def create_check(request: web.Request, body: Check) -> Reply:
    return 201, await request.app[CATALOG].put_check(body, create=True)


@router.add(
    "GET",
    "/v1/checks",
    "List check results",
    tag="policies",
    responses={200: list[Check]},
    access=READ,
)
async def list_checks(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_checks()


@router.add(
    "GET",
    "/v1/checks/{name}",
    "Read a check result",
    tag="policies",
    responses={200: Check, **READ_ERRORS},
    access=READ,
)
async def get_check(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_check(param(request, "name"))


@router.add(
    "PUT",
    "/v1/checks/{name}",
    "Update a check result (e.g. to succeeded)",
    tag="policies",
    body=Check,
    responses={200: Check, **WRITE},
    if_match=True,
    access=recorder("record checks of this application"),
)
async def update_check(request: web.Request, body: Check) -> Reply:
    catalog = request.app[CATALOG]
    return 200, await catalog.put_check(
        body, create=False, name=param(request, "name"), if_match=if_match(request)
    )


@router.add(
    "POST",
    "/v1/approvals",
    "Approve a deploy for an approval policy",
    tag="policies",
    body=Approval,
    responses={201: Approval, **WRITE},
    access=Access("approver", "approve deploys there", environment=_approval_env),
)
async def create_approval(request: web.Request, body: Approval) -> Reply:
    return 201, await request.app[CATALOG].create_approval(body)


@router.add(
    "GET",
    "/v1/approvals",
    "List approvals",
    tag="policies",
    responses={200: list[Approval]},
    access=READ,
)
async def list_approvals(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].list_approvals()


@router.add(
    "GET",
    "/v1/approvals/{name}",
    "Read an approval",
    tag="policies",
    responses={200: Approval, **READ_ERRORS},
    access=READ,
)
async def get_approval(request: web.Request, body: None) -> Reply:
    return 200, await request.app[CATALOG].get_approval(param(request, "name"))


deletes(
    "delete_policy",
    "/v1/policies/{id}",
    NodeKind.POLICY,
    "Delete a policy (and the approvals given for it)",
    tag="policies",
    access=admin("delete policies"),
    cascade=False,
)


deletes(
    "delete_check",
    "/v1/checks/{name}",
    NodeKind.CHECK,
    "Delete a check (a recorded result needs a ci grant, as recording it does)",
    tag="policies",
    access=recorder("delete checks of this application"),
    cascade=False,
)


deletes(
    "delete_approval",
    "/v1/approvals/{name}",
    NodeKind.APPROVAL,
    "Withdraw an approval (its approver, or a platform-admin)",
    tag="policies",
    access=withdraw("withdraw this approval"),
    cascade=False,
)

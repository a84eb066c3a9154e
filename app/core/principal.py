"""The kinds of caller and what an authenticated one is (app/core/auth.py authenticates)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Request

from app.core.audit import Actor


class Subject(StrEnum):
    citizen = "citizen"
    staff = "staff"
    client = "client"


# Scopes of the registry authority's staff (and of an administration console's client token).
OFFICER_REGISTRY = "officer:registry"  # read citizen records
ADMIN_REGISTRY = "admin:registry"  # create, correct and import citizen records
OFFICER_ACCOUNTS = "officer:accounts"  # level-2 registration steps 1-2, lock and unlock, phone
OFFICER_APPROVE = "officer:approve"  # level-2 registration step 3
ADMIN_ACCOUNTS = "admin:accounts"  # revoke accounts
AUDIT_READ = "audit:read"
ADMIN_CLIENTS = "admin:clients"  # relying-party onboarding
STAFF_SCOPES = frozenset(
    {OFFICER_REGISTRY, ADMIN_REGISTRY, OFFICER_ACCOUNTS, OFFICER_APPROVE, ADMIN_ACCOUNTS, AUDIT_READ, ADMIN_CLIENTS}
)
# A client's scope, for a monitoring system's client_credentials token: GET /metrics.
METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``entity`` is what its resolver found: the citizen's account,
    the staff member, or the client (its cached snapshot)."""

    subject: Subject
    id: str  # account ID, staff username, client_id
    name: str | None
    scopes: frozenset[str]
    entity: Any
    token_hash: str | None = None  # sessions only

    @property
    def actor(self) -> Actor:
        if self.subject is Subject.staff:
            return Actor("admin" if any(s.startswith("admin:") for s in self.scopes) else "officer", self.id)
        return Actor(self.subject.value, self.id)


# (ctx, request, token) -> the principal, or None when the credential is not of this kind or is
# unknown; a resolver may raise Unauthenticated with a reason when it is of its kind but bad.
# ``ctx`` is the AppContext (typed Any here: the context holds the resolvers).
Resolve = Callable[[Any, Request, str], Awaitable["Principal | None"]]


@dataclass(frozen=True, slots=True)
class Resolver:
    subject: Subject
    resolve: Resolve

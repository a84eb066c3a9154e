"""Who is calling: the one authenticator every domain configures (as polar's
``Authenticator(required_scopes=…, allowed_subjects=…)``), so that who may call is declared once
per route and checked the same way everywhere.

A request carries one bearer credential. The resolvers registered at start-up (app/main.py)
know what each kind is: a citizen's session (app/accounts/service.py), a staff member's session
(app/admin/service.py), a client's access token (app/oidc/bearer.py: signature, expiry,
revocation, and the client approved to connect). The authenticator tries the resolvers of the
subjects a route allows, then applies the same policy to every caller:

- the caller must have one of the route's scopes, if it names any (403 ``forbidden``);
- a client is rate-limited per client across every client-token API
  (``EID_CLIENT_RATE_PER_MINUTE``, shared by every process: app/core/ratelimit.py).

Domains' ``auth.py`` files are only configuration of this class.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi import Request

from app.core.context import note_caller
from app.core.deps import get_ctx
from app.core.errors import Forbidden, RateLimited, Unauthenticated
from app.core.principal import Principal, Subject


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


_ASK = {
    Subject.citizen: "a citizen's session token",
    Subject.staff: "an officer's access token",
    Subject.client: "a client_credentials access token",
}


class Authenticator:
    """A FastAPI dependency (and a plain ``await auth(request)`` for hot routes)."""

    def __init__(self, *, allowed_subjects: Collection[Subject], required_scopes: Collection[str] = ()) -> None:
        self.allowed = frozenset(allowed_subjects)
        self.required = frozenset(required_scopes)
        self._ask = " or ".join(_ASK[s] for s in Subject if s in self.allowed)

    async def __call__(self, request: Request) -> Principal:
        ctx = get_ctx(request)
        token = bearer_token(request)
        if token is None:
            raise Unauthenticated(f"Send {self._ask}: Authorization: Bearer <token>.")
        principal = None
        for resolver in ctx.resolvers:
            if resolver.subject in self.allowed:
                principal = await resolver.resolve(ctx, request, token)
                if principal is not None:
                    break
        if principal is None:
            raise Unauthenticated(f"The token is unknown, expired or revoked; send {self._ask}.")
        note_caller(
            client_id=principal.id if principal.subject is Subject.client else None,
            subject=f"{principal.subject.value}:{principal.id}",
        )
        if principal.subject is Subject.client:
            retry = await ctx.limiter.hit(f"client:{principal.id}", ctx.settings.client_rate_per_minute, 60)
            if retry is not None:
                raise RateLimited(retry)
        if self.required and principal.scopes.isdisjoint(self.required):
            wanted = " ".join(sorted(self.required))
            raise Forbidden(f"This needs one of the scopes: {wanted}.", required_scope=wanted)
        return principal

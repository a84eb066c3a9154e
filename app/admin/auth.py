"""Who may call the staff APIs (configuration of app/core/auth.py): officers and administrators
with their session, or an administration console's client token, holding the route's scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.auth import Authenticator
from app.core.principal import AUDIT_READ, Principal, Subject

STAFF = (Subject.staff, Subject.client)

AuditReader = Annotated[Principal, Depends(Authenticator(allowed_subjects=STAFF, required_scopes={AUDIT_READ}))]

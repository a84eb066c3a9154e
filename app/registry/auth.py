"""Who may call the registry APIs (configuration of app/core/auth.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.auth import Authenticator
from app.core.principal import ADMIN_REGISTRY, OFFICER_REGISTRY, Principal, Subject

STAFF = (Subject.staff, Subject.client)

RegistryReader = Annotated[
    Principal, Depends(Authenticator(allowed_subjects=STAFF, required_scopes={OFFICER_REGISTRY}))
]
RegistryAdmin = Annotated[Principal, Depends(Authenticator(allowed_subjects=STAFF, required_scopes={ADMIN_REGISTRY}))]

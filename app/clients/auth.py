"""Who may manage relying parties (configuration of app/core/auth.py): administrators, or an
administration console's client token, with the admin:clients scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.auth import Authenticator
from app.core.principal import ADMIN_CLIENTS, Principal, Subject

AdminClients = Annotated[
    Principal, Depends(Authenticator(allowed_subjects=(Subject.staff, Subject.client), required_scopes={ADMIN_CLIENTS}))
]

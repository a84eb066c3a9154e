"""Who may call the accounts APIs (configuration of app/core/auth.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.auth import Authenticator
from app.core.principal import ADMIN_ACCOUNTS, OFFICER_ACCOUNTS, OFFICER_APPROVE, Principal, Subject

STAFF = (Subject.staff, Subject.client)

CurrentCitizen = Annotated[Principal, Depends(Authenticator(allowed_subjects={Subject.citizen}))]
AccountsOfficer = Annotated[
    Principal, Depends(Authenticator(allowed_subjects=STAFF, required_scopes={OFFICER_ACCOUNTS}))
]
ApprovingOfficer = Annotated[
    Principal, Depends(Authenticator(allowed_subjects=STAFF, required_scopes={OFFICER_APPROVE}))
]
AccountsAdmin = Annotated[Principal, Depends(Authenticator(allowed_subjects=STAFF, required_scopes={ADMIN_ACCOUNTS}))]

"""Who may call the documents APIs (configuration of app/core/auth.py).

- ``IssuingAgency``: an approved client with the ``documents:issue`` scope (the document types it
  may issue are checked per write).
- ``ApprovedClient``: any approved client with a client_credentials token (status checks; the
  sharing domain's redemption uses it too).
- ``ClientsAdmin``: who may set which document types an agency issues.
- Citizens call the ``/me`` routes with their session (app/accounts/auth.py ``CurrentCitizen``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.auth import Authenticator
from app.core.principal import ADMIN_CLIENTS, Principal, Subject

DOCUMENTS_ISSUE = "documents:issue"

ApprovedClient = Annotated[Principal, Depends(Authenticator(allowed_subjects={Subject.client}))]
IssuingAgency = Annotated[
    Principal, Depends(Authenticator(allowed_subjects={Subject.client}, required_scopes={DOCUMENTS_ISSUE}))
]
ClientsAdmin = Annotated[
    Principal, Depends(Authenticator(allowed_subjects=(Subject.staff, Subject.client), required_scopes={ADMIN_CLIENTS}))
]

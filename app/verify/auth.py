"""Who may call the relying-party APIs (configuration of app/core/auth.py): approved clients with
a client_credentials access token carrying the scope a route needs (rate-limited per client by
the authenticator, as every client is)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.auth import Authenticator
from app.core.principal import Principal, Subject

verify_callers = Authenticator(allowed_subjects={Subject.client}, required_scopes={"verify", "ekyc"})
ekyc_callers = Authenticator(allowed_subjects={Subject.client}, required_scopes={"ekyc"})

VerifyCaller = Annotated[Principal, Depends(verify_callers)]
EkycCaller = Annotated[Principal, Depends(ekyc_callers)]

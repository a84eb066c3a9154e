"""Who may call the sharing APIs (configuration of app/core/auth.py).

- Citizens, with their session (``CurrentCitizen``), create, list and revoke their shares and
  render their QR codes; a guardian does so for a dependent.
- ``Verifier``: any approved client with a valid ``client_credentials`` access token (whatever
  its scopes) redeems a share online: qualifying to connect is what approval means.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.auth import Authenticator
from app.core.principal import Principal, Subject

Verifier = Annotated[Principal, Depends(Authenticator(allowed_subjects={Subject.client}))]

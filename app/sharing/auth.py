"""Who may call the sharing APIs, declared once here.

- Citizens, with their session (``CurrentCitizen``), create, list and revoke their shares and
  render their QR codes; a guardian does so for a dependent.
- ``Verifier``: any approved client with a valid ``client_credentials`` access token (whatever
  its scopes) redeems a share online: qualifying to connect is what approval means.
"""

from __future__ import annotations

from app.documents.auth import ApprovedClient

Verifier = ApprovedClient

"""The token endpoint's grant types, one module each, named after their RFC section: importing this
package registers them (base.GRANT_TYPES)."""

from app.oidc.grants import authorization_code, client_credentials, refresh_token
from app.oidc.grants.base import GRANT_TYPES, GrantType

__all__ = ["GRANT_TYPES", "GrantType", "authorization_code", "client_credentials", "refresh_token"]

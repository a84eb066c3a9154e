"""What the sharing domain can refuse: each reason a share is not honoured has its own type."""

from __future__ import annotations

from app.core.errors import Forbidden, NotFound, Problem


class ShareNotFound(NotFound):
    """The citizen's own shares: not theirs, or already revoked."""

    slug, title = "share-not-found", "No such share of yours"


class ShareUnknown(NotFound):
    slug, title = "share-unknown", "The service issued no such share"


class ShareRevoked(Problem):
    status, slug, title = 410, "share-revoked", "The citizen revoked this share"


class ShareExpired(Problem):
    status, slug, title = 410, "share-expired", "The share has expired"


class ShareRedeemed(Problem):
    status, slug, title = 409, "share-redeemed", "The share was already redeemed; ask for a new one"


class ShareAudienceMismatch(Forbidden):
    slug, title = "share-audience", "The share is for another verifier"


class ShareForged(Problem):
    status, slug, title = 400, "share-forged", "The share's signature does not verify"


class ShareMalformed(Problem):
    status, slug, title = 400, "share-malformed", "The share is malformed, truncated or altered"


class ShareTooLarge(Problem):
    status, slug, title = 413, "share-too-large", "The share is larger than any this service issues"


class ShareAudienceUnknown(Problem):
    status, slug, title = 422, "share-audience-unknown", "The audience is not an approved client"


class ShareEmpty(Problem):
    status, slug, title = 422, "share-empty", "Nothing chosen is available to share"

"""What the documents domain can refuse."""

from __future__ import annotations

from app.core.errors import Conflict, Forbidden, InvalidState, NotFound, Problem


class DocumentNotFound(NotFound):
    slug, title = "document-not-found", "No such document"


class DocumentExists(Conflict):
    slug, title = "document-exists", "A document of this type and number exists"


class DocumentTypeNotAllowed(Forbidden):
    slug, title = "document-type-not-allowed", "This agency may not issue this document type"


class DocumentHolderUnknown(Problem):
    status, slug, title = 422, "document-holder-unknown", "The holder is not in the population registry"


class DocumentInvalid(Problem):
    status, slug, title = 422, "document-invalid", "The document's fields do not fit together"


class DocumentStateConflict(InvalidState):
    slug, title = "document-state", "The document's status does not allow this"


class DocumentNotPresentable(InvalidState):
    slug, title = "document-not-presentable", "Only a valid document can be presented or shared"


class DependentNotFound(NotFound):
    slug, title = "dependent-not-found", "No dependent of yours has this account ID"


class NotAnAgency(Problem):
    status, slug, title = 422, "not-an-agency", "Only agency clients with the documents:issue scope issue documents"


# draft-ietf-httpapi-idempotency-key-header §2.7: 400 when the key is missing, 422 when it
# is reused with a different request.
class IdempotencyKeyMissing(Problem):
    status, slug, title = 400, "idempotency-key-missing", "This write needs an Idempotency-Key header"


class IdempotencyKeyInvalid(Problem):
    status, slug, title = 400, "idempotency-key-invalid", "The Idempotency-Key header is malformed"


class IdempotencyKeyReused(Problem):
    status, slug, title = 422, "idempotency-key-reused", "This Idempotency-Key was used for a different request"

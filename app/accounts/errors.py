"""What the accounts domain can refuse. Public answers never tell an unknown ID number
from a wrong password, a mismatch or an existing account."""

from __future__ import annotations

from app.core.errors import InvalidState, Problem


class LoginFailed(Problem):
    status, slug, title = 401, "login-failed", "Wrong ID number or password"

    def __init__(self) -> None:
        super().__init__(
            "The ID number or password is wrong. After 5 wrong passwords in a row, sign-in "
            "is paused for 15 minutes; an officer can also lock an account."
        )


class PasswordChangeRequired(Problem):
    status, slug, title = 403, "password-change-required", "Change the initial password first"


class WeakPassword(Problem):
    status, slug, title = 422, "weak-password", "The new password is not accepted"


class OtpInvalid(Problem):
    status, slug, title = 400, "otp-invalid", "The code is wrong, expired or already used"


class RegistrationNotCompleted(Problem):
    status, slug, title = 409, "registration-not-completed", "The registration cannot be completed"


class AccountNotFound(Problem):
    status, slug, title = 404, "account-not-found", "No account has this identifier"


class AccountStateConflict(InvalidState):
    slug, title = "account-state", "The account's status does not allow this"


class AssistedRegistrationNotFound(Problem):
    status, slug, title = 404, "registration-not-found", "No such officer-assisted registration"


class StepOutOfOrder(InvalidState):
    slug, title = "registration-step", "This step does not follow the registration's current state"


class AssistedRegistrationRefused(Problem):
    """Officer-facing: says exactly what is wrong with the request."""

    status, slug, title = 422, "registration-refused", "The registration does not fit the registry"

"""What the accounts domain can refuse. Public answers never tell an unknown ID number
from a wrong password, a mismatch or an existing account."""

from __future__ import annotations

from app.core.errors import InvalidState, Problem
from app.core.passwords import PasswordRule, rule_message


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

    rules: list[PasswordRule]

    @classmethod
    def of(cls, rules: list[PasswordRule], min_length: int) -> WeakPassword:
        messages = [rule_message(r, "en", min_length) for r in rules]
        exc = cls(" ".join(messages), problems=messages)
        exc.rules = rules  # for pages, which say it in the citizen's language
        return exc


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


class AccountLocked(Problem):
    """Only ever answered to a caller who gave the right password: the account is locked (by
    an officer, or for a while after too many wrong passwords), and until when."""

    status, slug, title = 403, "account-locked", "The account is locked"


class OtpLocked(Problem):
    """Too many wrong codes for this ID number or phone: registration and reset wait. The same
    answer whatever the registry holds (the count is kept for every ID number asked about)."""

    status, slug, title = 429, "otp-locked", "Too many wrong codes; try again later"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "Registration and password reset are paused after too many wrong codes.",
            headers={"Retry-After": str(retry_after)},
        )


class ClaimNotAllowed(InvalidState):
    slug, title = "claim-not-allowed", "This dependent cannot take over their account now"

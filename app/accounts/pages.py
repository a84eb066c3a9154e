"""The citizen's pages for registering (level 1) and resetting a forgotten password, linked from
the provider's login page. Plain forms (no JavaScript), Vietnamese by default, every form
bound to this browser by a CSRF token (app/core/pages.py). They call the same services as
the JSON API, so they give exactly the same answers: the same one for every caller whatever
the registry holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app.accounts import registration
from app.accounts.errors import OtpInvalid, OtpLocked, RegistrationNotCompleted, WeakPassword
from app.accounts.models import OtpChallenge
from app.accounts.schemas import PasswordResetStart, RegistrationStart
from app.core.deps import AppContext, get_ctx
from app.core.errors import RateLimited
from app.core.pages import Pages, csrf_ok, device_of, form_csrf, new_device, page_locale, set_device_cookie
from app.core.passwords import rule_message

router = APIRouter(include_in_schema=False)

TEXT: dict[str, dict[str, str]] = {
    "vi": {
        "home_heading": "Tài khoản định danh điện tử",
        "home_intro": "Đăng nhập từ cổng dịch vụ công bạn đang dùng. Tại đây bạn có thể đăng ký tài khoản mức 1 "
        "hoặc đặt lại mật khẩu đã quên.",
        "register_heading": "Đăng ký tài khoản định danh điện tử mức 1",
        "register_heading_short": "Đăng ký tài khoản",
        "register_intro": "Dành cho công dân từ đủ 14 tuổi. Mã xác thực chỉ được gửi tới số điện thoại gắn với bạn "
        "trong Cơ sở dữ liệu quốc gia về dân cư, do nhà mạng xác nhận, hoặc được người giám hộ chấp thuận.",
        "id_number": "Số định danh cá nhân (12 chữ số)",
        "full_name": "Họ và tên",
        "date_of_birth": "Ngày sinh",
        "phone": "Số điện thoại di động",
        "continue": "Tiếp tục",
        "sent": "Nếu thông tin khớp với Cơ sở dữ liệu quốc gia về dân cư và số điện thoại gắn với bạn, mã gồm 6 chữ số "
        "đã được gửi qua SMS. Mã hết hạn sau 5 phút. Nếu không nhận được mã, hãy đăng ký trực tiếp tại cơ quan công an.",
        "code_heading": "Nhập mã xác thực",
        "code": "Mã xác thực (6 chữ số)",
        "confirm": "Xác nhận",
        "registered_heading": "Tài khoản đã được kích hoạt",
        "registered": "Mật khẩu tạm thời đã được gửi qua SMS. Hãy đăng nhập và đổi mật khẩu ở lần đăng nhập đầu tiên.",
        "otp_invalid": "Mã không đúng, đã hết hạn hoặc đã được dùng. Hãy yêu cầu mã mới nếu cần.",
        "otp_locked": "Đăng ký và đặt lại mật khẩu tạm dừng do nhập sai mã quá nhiều lần. Hãy thử lại sau.",
        "not_completed": "Nếu bạn đã có tài khoản, hãy đăng nhập hoặc đặt lại mật khẩu.",
        "reset_heading": "Đặt lại mật khẩu",
        "reset_intro": "Nhập số định danh và số điện thoại của tài khoản. Mã xác thực sẽ được gửi qua SMS.",
        "reset_sent": "Nếu có tài khoản đang hoạt động với số định danh và số điện thoại này, mã gồm 6 chữ số "
        "đã được gửi qua SMS. Mã hết hạn sau 5 phút.",
        "new_password": "Mật khẩu mới (ít nhất {min} ký tự)",
        "reset_done_heading": "Mật khẩu đã được đặt lại",
        "reset_done": "Mọi phiên đăng nhập khác đã kết thúc. Hãy đăng nhập bằng mật khẩu mới.",
        "back_to_login": "Quay lại đăng nhập",
        "home": "Trang chủ",
        "bad_id_number": "Số định danh gồm đúng 12 chữ số.",
        "bad_full_name": "Hãy nhập họ và tên như trên căn cước.",
        "bad_date_of_birth": "Ngày sinh không hợp lệ.",
        "bad_phone": "Số di động Việt Nam, ví dụ 0912345678.",
        "bad_code": "Mã gồm 6 chữ số.",
    },
    "en": {
        "home_heading": "e-ID account",
        "home_intro": "Sign in from the public-service portal you use. Here you can register a level-1 account "
        "or reset a forgotten password.",
        "register_heading": "Register a level-1 e-ID account",
        "register_heading_short": "Register an account",
        "register_intro": "For citizens aged 14 and over. The code is sent only to a phone linked to you in the "
        "national population database, confirmed by your mobile operator, or approved by your guardian.",
        "id_number": "Personal ID number (12 digits)",
        "full_name": "Full name",
        "date_of_birth": "Date of birth",
        "phone": "Mobile phone number",
        "continue": "Continue",
        "sent": "If the details match the national population database and the phone number is linked to you, a "
        "6-digit code was sent by SMS. It expires in 5 minutes. If no code arrives, register in person at a police office.",
        "code_heading": "Enter the code",
        "code": "Code (6 digits)",
        "confirm": "Confirm",
        "registered_heading": "Your account is active",
        "registered": "A temporary password was sent by SMS. Sign in and change it at your first sign-in.",
        "otp_invalid": "The code is wrong, expired or already used. Ask for a new one if needed.",
        "otp_locked": "Registration and password reset are paused after too many wrong codes. Try again later.",
        "not_completed": "If you already have an account, sign in or reset your password.",
        "reset_heading": "Reset your password",
        "reset_intro": "Enter your account's ID number and phone number. A code will be sent by SMS.",
        "reset_sent": "If an active account has this ID number and phone number, a 6-digit code was sent by SMS. "
        "It expires in 5 minutes.",
        "new_password": "New password (at least {min} characters)",
        "reset_done_heading": "Your password was reset",
        "reset_done": "Every other session has ended. Sign in with your new password.",
        "back_to_login": "Back to sign-in",
        "home": "Home",
        "bad_id_number": "The ID number has exactly 12 digits.",
        "bad_full_name": "Enter your full name as on your ID card.",
        "bad_date_of_birth": "The date of birth is not valid.",
        "bad_phone": "A Vietnamese mobile number, e.g. 0912345678.",
        "bad_code": "The code has 6 digits.",
    },
}

pages = Pages(Path(__file__).parent / "templates", TEXT)


# The form fields these pages ask for, and how browsers should treat them (WCAG 2.1 §1.3.5).
_FIELDS: dict[str, dict[str, Any]] = {
    "id_number": {"autocomplete": "username", "inputmode": "numeric", "maxlength": 12},
    "full_name": {"autocomplete": "name", "maxlength": 200},
    "date_of_birth": {"type": "date", "autocomplete": "bday"},
    "phone": {"type": "tel", "autocomplete": "tel", "maxlength": 20},
    "code": {"autocomplete": "one-time-code", "inputmode": "numeric", "maxlength": 6},
    "new_password": {"type": "password", "autocomplete": "new-password", "maxlength": 1024},
}


@dataclass
class Field:
    name: str
    label: str
    type: str = "text"
    value: str = ""
    autocomplete: str | None = None
    inputmode: str | None = None
    maxlength: int | None = None
    error: str | None = None


def _fields(
    locale: str, names: tuple[str, ...], values: dict[str, str], errors: dict[str, str], min_length: int
) -> list[Field]:
    t = TEXT[locale]
    return [
        Field(name, t[name].format(min=min_length), value=values.get(name, "") if "password" not in name else "",
              error=errors.get(name), **_FIELDS[name])
        for name in names
    ]  # fmt: skip


def _req_param(value: str | None) -> str:
    """The authorization request the citizen came from (to send them back to sign in)."""
    return value if value and len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum() else ""


def _links(locale: str, req: str) -> list[tuple[str, str]]:
    t = TEXT[locale]
    return [(t["back_to_login"], f"/login?req={req}")] if req else [(t["home"], "/")]


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[:16384].decode("utf-8", "replace")
    pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=20)
    # A NUL or an overlong value is simply invalid input for these fields.
    return {k: v for k, v in pairs if "\x00" not in v and len(v) <= 1024}


def _field_errors(exc: ValidationError, locale: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        errors.setdefault(name, TEXT[locale].get(f"bad_{name}", TEXT[locale]["bad_full_name"]))
    return errors


def _refused(request: Request, locale: str, message: str, status: int, req: str, exc: Any = None) -> Response:
    headers = getattr(exc, "headers", None)
    return pages.message(request, locale, message, status=status, links=_links(locale, req), headers=headers)


# --- home ------------------------------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    return pages.render(request, "home.html", page_locale(request))


# --- the two SMS-code flows: registration and password reset ---------------------------------


Start = Callable[[AsyncSession, AppContext, Any], Awaitable[OtpChallenge]]
Complete = Callable[[AsyncSession, AppContext, uuid.UUID, dict[str, str]], Awaitable[None]]


@dataclass(frozen=True)
class CodeFlow:
    """A page asking for details (which start an SMS challenge), then a page asking for the code
    (and what completes the flow), then a done page. Text keys are in TEXT."""

    name: str
    path: str
    fields: tuple[str, ...]
    model: type[BaseModel]
    start: Start
    code_fields: tuple[str, ...]
    complete: Complete
    heading: str
    intro: str
    code_heading: str
    sent: str
    done_heading: str
    done: str

    def page(
        self, request: Request, ctx: AppContext, *, step: str, req: str, values: dict[str, str] | None = None,
        errors: dict[str, str] | None = None, error: str | None = None, status: int = 200, challenge: str = "",
    ) -> Response:  # fmt: skip
        """The details page (step "start") or the code page (step "code"), bound to this browser."""
        locale = page_locale(request)
        t = TEXT[locale]
        device = device_of(request) or new_device()
        code = step == "code"
        names = self.code_fields if code else self.fields
        response = pages.render(
            request, "form.html", locale, status,
            next_url=f"{self.path}/code?c={challenge}&req={req}" if code else f"{self.path}?req={req}",
            heading=t[self.code_heading if code else self.heading], intro=None if code else t[self.intro],
            notice=t[self.sent] if code and status == 200 else None, error=error,
            action=f"{self.path}/code" if code else self.path,
            fields=_fields(locale, names, values or {}, errors or {}, ctx.settings.password_min_length),
            submit=t["confirm" if code else "continue"], csrf=form_csrf(ctx.keyring, device, f"{self.name}-{step}"),
            hidden={"req": req, **({"c": challenge} if code else {})}, links=_links(locale, req),
        )  # fmt: skip
        set_device_cookie(response, ctx.settings, device)
        return response

    async def show_start(self, request: Request, req: str = "") -> Response:
        return self.page(request, get_ctx(request), step="start", req=_req_param(req))

    async def submit_start(self, request: Request) -> Response:
        ctx, locale = get_ctx(request), page_locale(request)
        form = await _form(request)
        req = _req_param(form.get("req"))
        if not csrf_ok(ctx.keyring, request, f"{self.name}-start", form.get("csrf")):
            return _refused(request, locale, pages.words(locale)["csrf_failed"], 403, req)
        values = {k: form.get(k, "") for k in self.fields}
        try:
            body = self.model.model_validate(values)
        except ValidationError as exc:
            errors = _field_errors(exc, locale)
            return self.page(request, ctx, step="start", req=req, values=values, errors=errors, status=422)
        async with ctx.sessionmaker() as session:
            try:
                challenge = await self.start(session, ctx, body)
            except OtpLocked as exc:
                return _refused(request, locale, TEXT[locale]["otp_locked"], 429, req, exc)
            except RateLimited as exc:
                return _refused(request, locale, pages.words(locale)["too_many"], 429, req, exc)
        return RedirectResponse(f"{self.path}/code?c={challenge.id}&req={quote(req)}", status_code=303)

    async def show_code(self, request: Request, c: str = "", req: str = "") -> Response:
        return self.page(request, get_ctx(request), step="code", req=_req_param(req), challenge=c[:36])

    async def submit_code(self, request: Request) -> Response:
        ctx, locale = get_ctx(request), page_locale(request)
        t = TEXT[locale]
        form = await _form(request)
        req, code = _req_param(form.get("req")), form.get("code", "").strip()
        try:
            challenge_id: uuid.UUID | None = uuid.UUID(form.get("c", ""))
        except ValueError:
            challenge_id = None
        if not csrf_ok(ctx.keyring, request, f"{self.name}-code", form.get("csrf")):
            return _refused(request, locale, pages.words(locale)["csrf_failed"], 403, req)

        def again(errors: dict[str, str], error: str | None, status: int) -> Response:
            return self.page(
                request, ctx, step="code", req=req, errors=errors, error=error, status=status,
                challenge=str(challenge_id or ""),
            )  # fmt: skip

        if challenge_id is None or not (len(code) == 6 and code.isascii() and code.isdigit()):
            return again({"code": t["bad_code"]}, None, 422)
        async with ctx.sessionmaker() as session:
            try:
                await self.complete(session, ctx, challenge_id, form)
            except WeakPassword as exc:
                message = " ".join(rule_message(r, locale, ctx.settings.password_min_length) for r in exc.rules)
                return again({"new_password": message}, None, 422)
            except OtpLocked as exc:
                return _refused(request, locale, t["otp_locked"], 429, req, exc)
            except OtpInvalid:
                return again({}, t["otp_invalid"], 400)
            except RegistrationNotCompleted:
                return _refused(request, locale, t["not_completed"], 409, req)
        return pages.message(
            request, locale, t[self.done], status=200, heading=t[self.done_heading], is_error=False,
            links=_links(locale, req), next_url="/",
        )  # fmt: skip

    def routes(self, into: APIRouter) -> None:
        into.add_api_route(self.path, self.show_start, methods=["GET"])
        into.add_api_route(self.path, self.submit_start, methods=["POST"])
        into.add_api_route(f"{self.path}/code", self.show_code, methods=["GET"])
        into.add_api_route(f"{self.path}/code", self.submit_code, methods=["POST"])


async def _verify_registration(
    session: AsyncSession, ctx: AppContext, challenge: uuid.UUID, form: dict[str, str]
) -> None:
    await registration.verify_registration(session, ctx, challenge, form.get("code", "").strip())


async def _complete_reset(session: AsyncSession, ctx: AppContext, challenge: uuid.UUID, form: dict[str, str]) -> None:
    code, password = form.get("code", "").strip(), form.get("new_password", "")
    await registration.complete_password_reset(session, ctx, challenge, code, password)


REGISTER = CodeFlow(
    name="register", path="/register", fields=("id_number", "full_name", "date_of_birth", "phone"),
    model=RegistrationStart, start=registration.start_registration, code_fields=("code",),
    complete=_verify_registration, heading="register_heading", intro="register_intro", code_heading="code_heading",
    sent="sent", done_heading="registered_heading", done="registered",
)  # fmt: skip
RESET = CodeFlow(
    name="reset", path="/password-reset", fields=("id_number", "phone"), model=PasswordResetStart,
    start=registration.start_password_reset, code_fields=("code", "new_password"), complete=_complete_reset,
    heading="reset_heading", intro="reset_intro", code_heading="reset_heading", sent="reset_sent",
    done_heading="reset_done_heading", done="reset_done",
)  # fmt: skip
REGISTER.routes(router)
RESET.routes(router)

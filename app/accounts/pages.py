"""The citizen's pages for registering (level 1) and resetting a forgotten password, linked from
the provider's login page. Plain forms (no JavaScript), Vietnamese by default, every form
bound to this browser by a CSRF token (app/core/pages.py). They call the same services as
the JSON API, so they give exactly the same answers: the same one for every caller whatever
the registry holds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from app.accounts import registration
from app.accounts.errors import OtpInvalid, OtpLocked, RegistrationNotCompleted, WeakPassword
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


def _req_param(value: str | None) -> str:
    """The authorization request the citizen came from (to send them back to sign in)."""
    return value if value and len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum() else ""


def _links(locale: str, req: str) -> list[tuple[str, str]]:
    t = TEXT[locale]
    return [(t["back_to_login"], f"/login?req={req}")] if req else [(t["home"], "/")]


def _form_page(
    request: Request,
    ctx: AppContext,
    form_name: str,
    *,
    heading: str,
    action: str,
    fields: list[Field],
    submit: str,
    req: str,
    hidden: dict[str, str] | None = None,
    intro: str | None = None,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
    next_url: str | None = None,
) -> Response:
    locale = page_locale(request)
    device = device_of(request) or new_device()
    response = pages.render(
        request, "form.html", locale, status, next_url=next_url, heading=heading, intro=intro, notice=notice,
        error=error, action=action, fields=fields, submit=submit, csrf=form_csrf(ctx.keyring, device, form_name),
        hidden={"req": req, **(hidden or {})}, links=_links(locale, req),
    )  # fmt: skip
    set_device_cookie(response, ctx.settings, device)
    return response


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


# --- registration ----------------------------------------------------------------------------


def _registration_fields(locale: str, values: dict[str, str], errors: dict[str, str]) -> list[Field]:
    t = TEXT[locale]
    return [
        Field("id_number", t["id_number"], value=values.get("id_number", ""), autocomplete="username",
              inputmode="numeric", maxlength=12, error=errors.get("id_number")),
        Field("full_name", t["full_name"], value=values.get("full_name", ""), autocomplete="name", maxlength=200,
              error=errors.get("full_name")),
        Field("date_of_birth", t["date_of_birth"], type="date", value=values.get("date_of_birth", ""),
              autocomplete="bday", error=errors.get("date_of_birth")),
        Field("phone", t["phone"], type="tel", value=values.get("phone", ""), autocomplete="tel", maxlength=20,
              error=errors.get("phone")),
    ]  # fmt: skip


@router.get("/register")
async def register_page(request: Request, req: str = "") -> Response:
    ctx, locale = get_ctx(request), page_locale(request)
    t = TEXT[locale]
    return _form_page(
        request, ctx, "register", heading=t["register_heading"], intro=t["register_intro"], action="/register",
        fields=_registration_fields(locale, {}, {}), submit=t["continue"], req=_req_param(req),
    )  # fmt: skip


@router.post("/register")
async def register_submit(request: Request) -> Response:
    ctx, locale = get_ctx(request), page_locale(request)
    t = TEXT[locale]
    form = await _form(request)
    req = _req_param(form.get("req"))
    if not csrf_ok(ctx.keyring, request, "register", form.get("csrf")):
        return _refused(request, locale, pages.words(locale)["csrf_failed"], 403, req)
    values = {k: form.get(k, "") for k in ("id_number", "full_name", "date_of_birth", "phone")}
    try:
        body = RegistrationStart.model_validate(values)
    except ValidationError as exc:
        return _form_page(
            request, ctx, "register", heading=t["register_heading"], intro=t["register_intro"], action="/register",
            fields=_registration_fields(locale, values, _field_errors(exc, locale)), submit=t["continue"], req=req,
            status=422, next_url=f"/register?req={req}",
        )  # fmt: skip
    async with ctx.sessionmaker() as session:
        try:
            challenge = await registration.start_registration(session, ctx, body)
        except OtpLocked as exc:
            return _refused(request, locale, t["otp_locked"], 429, req, exc)
        except RateLimited as exc:
            return _refused(request, locale, pages.words(locale)["too_many"], 429, req, exc)
    return RedirectResponse(f"/register/code?c={challenge.id}&req={quote(req)}", status_code=303)


def _code_fields(locale: str, errors: dict[str, str], *, with_password: int | None = None) -> list[Field]:
    t = TEXT[locale]
    fields = [
        Field(
            "code", t["code"], inputmode="numeric", autocomplete="one-time-code", maxlength=6, error=errors.get("code")
        )
    ]
    if with_password is not None:
        fields.append(
            Field("new_password", t["new_password"].format(min=with_password), type="password",
                  autocomplete="new-password", maxlength=1024, error=errors.get("new_password"))
        )  # fmt: skip
    return fields


def _challenge(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value or "")
    except ValueError:
        return None


@router.get("/register/code")
async def register_code_page(request: Request, c: str = "", req: str = "") -> Response:
    ctx, locale = get_ctx(request), page_locale(request)
    t = TEXT[locale]
    return _form_page(
        request, ctx, "register-code", heading=t["code_heading"], notice=t["sent"], action="/register/code",
        fields=_code_fields(locale, {}), submit=t["confirm"], req=_req_param(req), hidden={"c": c[:36]},
    )  # fmt: skip


@router.post("/register/code")
async def register_code_submit(request: Request) -> Response:
    ctx, locale = get_ctx(request), page_locale(request)
    t = TEXT[locale]
    form = await _form(request)
    req, challenge_id, code = _req_param(form.get("req")), _challenge(form.get("c")), form.get("code", "").strip()
    if not csrf_ok(ctx.keyring, request, "register-code", form.get("csrf")):
        return _refused(request, locale, pages.words(locale)["csrf_failed"], 403, req)
    here = f"/register/code?c={challenge_id}&req={req}"
    if challenge_id is None or not (len(code) == 6 and code.isascii() and code.isdigit()):
        return _form_page(
            request, ctx, "register-code", heading=t["code_heading"], action="/register/code",
            fields=_code_fields(locale, {"code": t["bad_code"]}), submit=t["confirm"], req=req,
            hidden={"c": str(challenge_id or "")}, status=422, next_url=here,
        )  # fmt: skip
    async with ctx.sessionmaker() as session:
        try:
            await registration.verify_registration(session, ctx, challenge_id, code)
        except OtpLocked as exc:
            return _refused(request, locale, t["otp_locked"], 429, req, exc)
        except OtpInvalid:
            return _form_page(
                request, ctx, "register-code", heading=t["code_heading"], action="/register/code",
                fields=_code_fields(locale, {}), submit=t["confirm"], req=req, hidden={"c": str(challenge_id)},
                error=t["otp_invalid"], status=400, next_url=here,
            )  # fmt: skip
        except RegistrationNotCompleted:
            return _refused(request, locale, t["not_completed"], 409, req)
    return pages.message(
        request, locale, t["registered"], status=200, heading=t["registered_heading"], is_error=False,
        links=_links(locale, req), next_url="/",
    )  # fmt: skip


# --- password reset --------------------------------------------------------------------------


def _reset_fields(locale: str, values: dict[str, str], errors: dict[str, str]) -> list[Field]:
    t = TEXT[locale]
    return [
        Field("id_number", t["id_number"], value=values.get("id_number", ""), autocomplete="username",
              inputmode="numeric", maxlength=12, error=errors.get("id_number")),
        Field("phone", t["phone"], type="tel", value=values.get("phone", ""), autocomplete="tel", maxlength=20,
              error=errors.get("phone")),
    ]  # fmt: skip


@router.get("/password-reset")
async def reset_page(request: Request, req: str = "") -> Response:
    ctx, locale = get_ctx(request), page_locale(request)
    t = TEXT[locale]
    return _form_page(
        request, ctx, "reset", heading=t["reset_heading"], intro=t["reset_intro"], action="/password-reset",
        fields=_reset_fields(locale, {}, {}), submit=t["continue"], req=_req_param(req),
    )  # fmt: skip


@router.post("/password-reset")
async def reset_submit(request: Request) -> Response:
    ctx, locale = get_ctx(request), page_locale(request)
    t = TEXT[locale]
    form = await _form(request)
    req = _req_param(form.get("req"))
    if not csrf_ok(ctx.keyring, request, "reset", form.get("csrf")):
        return _refused(request, locale, pages.words(locale)["csrf_failed"], 403, req)
    values = {k: form.get(k, "") for k in ("id_number", "phone")}
    try:
        body = PasswordResetStart.model_validate(values)
    except ValidationError as exc:
        return _form_page(
            request, ctx, "reset", heading=t["reset_heading"], intro=t["reset_intro"], action="/password-reset",
            fields=_reset_fields(locale, values, _field_errors(exc, locale)), submit=t["continue"], req=req,
            status=422, next_url=f"/password-reset?req={req}",
        )  # fmt: skip
    async with ctx.sessionmaker() as session:
        try:
            challenge = await registration.start_password_reset(session, ctx, body)
        except OtpLocked as exc:
            return _refused(request, locale, t["otp_locked"], 429, req, exc)
        except RateLimited as exc:
            return _refused(request, locale, pages.words(locale)["too_many"], 429, req, exc)
    return RedirectResponse(f"/password-reset/code?c={challenge.id}&req={quote(req)}", status_code=303)


@router.get("/password-reset/code")
async def reset_code_page(request: Request, c: str = "", req: str = "") -> Response:
    ctx, locale = get_ctx(request), page_locale(request)
    t = TEXT[locale]
    return _form_page(
        request, ctx, "reset-code", heading=t["reset_heading"], notice=t["reset_sent"], action="/password-reset/code",
        fields=_code_fields(locale, {}, with_password=ctx.settings.password_min_length), submit=t["confirm"],
        req=_req_param(req), hidden={"c": c[:36]},
    )  # fmt: skip


@router.post("/password-reset/code")
async def reset_code_submit(request: Request) -> Response:
    ctx, locale = get_ctx(request), page_locale(request)
    t = TEXT[locale]
    min_length = ctx.settings.password_min_length
    form = await _form(request)
    req, challenge_id, code = _req_param(form.get("req")), _challenge(form.get("c")), form.get("code", "").strip()
    if not csrf_ok(ctx.keyring, request, "reset-code", form.get("csrf")):
        return _refused(request, locale, pages.words(locale)["csrf_failed"], 403, req)
    here = f"/password-reset/code?c={challenge_id}&req={req}"

    def again(errors: dict[str, str], error: str | None, status: int) -> Response:
        return _form_page(
            request, ctx, "reset-code", heading=t["reset_heading"], action="/password-reset/code",
            fields=_code_fields(locale, errors, with_password=min_length), submit=t["confirm"], req=req,
            hidden={"c": str(challenge_id or "")}, error=error, status=status, next_url=here,
        )  # fmt: skip

    if challenge_id is None or not (len(code) == 6 and code.isascii() and code.isdigit()):
        return again({"code": t["bad_code"]}, None, 422)
    async with ctx.sessionmaker() as session:
        try:
            await registration.complete_password_reset(session, ctx, challenge_id, code, form.get("new_password", ""))
        except WeakPassword as exc:
            return again({"new_password": " ".join(rule_message(r, locale, min_length) for r in exc.rules)}, None, 422)
        except OtpLocked as exc:
            return _refused(request, locale, t["otp_locked"], 429, req, exc)
        except OtpInvalid:
            return again({}, t["otp_invalid"], 400)
    return pages.message(
        request, locale, t["reset_done"], status=200, heading=t["reset_done_heading"], is_error=False,
        links=_links(locale, req), next_url="/",
    )  # fmt: skip

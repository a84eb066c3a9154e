"""What every server-rendered page shares: templates, the language, the browser's device cookie,
CSRF tokens for forms outside an authorization request, and the security headers.

Language: Vietnamese by default. The citizen's own choice (the switch on every page, kept in
the ``eid_lang`` cookie) wins; then the portal's ``ui_locales`` (OIDC Core §3.1.2.1), stored
with the authorization request; then the browser's ``Accept-Language``.

The device cookie (``eid_device``, random, HttpOnly, SameSite=Lax) names this browser. An
authorization request is bound to the browser that started it, and a form posted from any
other browser (no cookie of ours, or another one) is refused before anything is read from it:
this is what stops login CSRF and session fixation at the provider (OIDC Core §3.1.2.1;
RFC 9700 §4.4: an attacker must not be able to sign a victim's browser in as the attacker).
The same cookie tells a sign-in from a browser not seen before.
"""

from __future__ import annotations

import hmac
import re
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import jinja2
from fastapi import APIRouter, Request
from fastapi.templating import Jinja2Templates
from starlette.responses import RedirectResponse, Response

from app.core.config import Settings
from app.core.crypto import Keyring, random_token

LOCALES = ("vi", "en")
LANG_COOKIE = "eid_lang"
DEVICE_COOKIE = "eid_device"
_DEVICE_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_TEMPLATES = Path(__file__).parent / "templates"

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    # form-action allows the portals' redirect URIs: browsers apply it to the redirect that
    # follows a form (the consent form ends in a redirect to the portal).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

COMMON: dict[str, dict[str, str]] = {
    "vi": {
        "title": "Tài khoản định danh điện tử",
        "language": "Ngôn ngữ",
        "error_heading": "Không thể tiếp tục",
        "csrf_failed": "Kiểm tra bảo mật thất bại. Hãy tải lại trang và thử lại.",
        "other_browser": "Yêu cầu này được bắt đầu trên một trình duyệt khác (hoặc trình duyệt đang chặn cookie). "
        "Hãy quay lại dịch vụ và bắt đầu lại trên trình duyệt này.",
        "expired": "Yêu cầu đã hết hạn. Hãy quay lại dịch vụ và thử lại.",
        "too_many": "Bạn đã thử quá nhiều lần. Hãy thử lại sau.",
        "unavailable": "Dịch vụ tạm thời không sẵn sàng. Hãy thử lại sau ít phút.",
    },
    "en": {
        "title": "e-ID account",
        "language": "Language",
        "error_heading": "Cannot continue",
        "csrf_failed": "The security check failed. Reload the page and try again.",
        "other_browser": "This request was started in another browser (or this browser blocks cookies). "
        "Go back to the service and start again in this browser.",
        "expired": "The request expired. Go back to the service and try again.",
        "too_many": "Too many attempts. Try again later.",
        "unavailable": "The service is temporarily unavailable. Try again in a few minutes.",
    },
}
_LANGUAGE_NAMES = {"vi": "Tiếng Việt", "en": "English"}


def _base(tag: str) -> str | None:
    base = tag.split(";")[0].strip().split("-")[0].lower()
    return base if base in LOCALES else None


def locale_from(ui_locales: str | None, accept_language: str | None) -> str:
    """The language a new flow starts in: ``ui_locales`` first, then ``Accept-Language``."""
    for tag in (ui_locales or "").split():
        if found := _base(tag):
            return found
    weighted = []
    for i, part in enumerate((accept_language or "").split(",")[:20]):
        lang, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            continue
        if (found := _base(lang)) and weight > 0:
            weighted.append((-weight, i, found))
    return min(weighted)[2] if weighted else "vi"


def page_locale(request: Request, stored: str | None = None) -> str:
    """The citizen's own choice, else what the flow started with, else the browser's."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LOCALES:
        return chosen
    if stored in LOCALES:
        return stored
    return locale_from(request.query_params.get("ui_locales"), request.headers.get("accept-language"))


def cookie_secure(settings: Settings) -> bool:
    return settings.cookie_secure if settings.cookie_secure is not None else settings.issuer.startswith("https://")


def device_of(request: Request) -> str | None:
    value = request.cookies.get(DEVICE_COOKIE, "")
    return value if _DEVICE_RE.match(value) else None


def new_device() -> str:
    return random_token(32)


def set_device_cookie(response: Response, settings: Settings, device: str) -> None:
    # 400 days: the longest a browser keeps a cookie (RFC 6265bis §5.5, Chrome's cap).
    response.set_cookie(
        DEVICE_COOKIE, device, max_age=400 * 86400, path="/", secure=cookie_secure(settings), httponly=True,
        samesite="lax",
    )  # fmt: skip


def browser_hash(keyring: Keyring, device: str | None) -> str | None:
    return keyring.keyed_hash("browser", device) if device else None


def same_browser(keyring: Keyring, request: Request, expected_hash: str | None) -> bool:
    actual = browser_hash(keyring, device_of(request))
    return expected_hash is not None and actual is not None and hmac.compare_digest(actual, expected_hash)


def form_csrf(keyring: Keyring, device: str, form: str) -> str:
    """A form's CSRF token outside an authorization request: bound to this browser's device
    cookie and to the form (a token for one form is refused by another)."""
    return keyring.keyed_hash("page-csrf", device, form)[:43]


def csrf_ok(keyring: Keyring, request: Request, form: str, presented: str | None) -> bool:
    device = device_of(request)
    if device is None or not presented:
        return False
    return hmac.compare_digest(form_csrf(keyring, device, form).encode(), presented.encode())


def safe_next(target: str | None) -> str:
    """A path on this site (never another origin: an open redirect would help phishing)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def _switch_links(request: Request, next_url: str | None) -> list[tuple[str, str, str]]:
    if next_url is None and request.method == "GET":
        query = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "lang"]
        next_url = request.url.path + ("?" + urlencode(query) if query else "")
    target = safe_next(next_url)
    return [(code, _LANGUAGE_NAMES[code], f"/lang?to={code}&next={quote(target, safe='')}") for code in LOCALES]


class Pages:
    """A domain's templates (its own directory, then the shared ones) and its words."""

    def __init__(self, directory: Path | None, messages: Mapping[str, Mapping[str, str]] | None = None) -> None:
        dirs = [str(d) for d in (directory, _TEMPLATES) if d is not None]
        self.templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.FileSystemLoader(dirs), autoescape=True))
        self.messages = messages or {}

    def words(self, locale: str) -> ChainMap[str, str]:
        return ChainMap(dict(self.messages.get(locale, {})), COMMON[locale])

    def render(
        self,
        request: Request,
        name: str,
        locale: str,
        status: int = 200,
        *,
        next_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> Response:
        return self.templates.TemplateResponse(
            request,
            name,
            {"t": self.words(locale), "locale": locale, "switch": _switch_links(request, next_url), **context},
            status_code=status,
            headers={**PAGE_HEADERS, **(headers or {})},
        )

    def message(
        self,
        request: Request,
        locale: str,
        message: str,
        *,
        status: int = 400,
        heading: str | None = None,
        is_error: bool = True,
        next_url: str | None = None,
        links: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return self.render(
            request, "message.html", locale, status, next_url=next_url, headers=headers,
            heading=heading or COMMON[locale]["error_heading"], message=message, is_error=is_error,
            form_action=None, hidden={}, links=links or [],
        )  # fmt: skip


lang_router = APIRouter(include_in_schema=False)


@lang_router.get("/lang")
async def switch_language(request: Request, to: str = "vi", next: str = "/") -> Response:
    """The language switch on every page: remembered for this browser, back to the page."""
    response = RedirectResponse(safe_next(next), status_code=303, headers={"Cache-Control": "no-store"})
    if to in LOCALES:
        settings: Settings = request.app.state.ctx.settings
        response.set_cookie(
            LANG_COOKIE,
            to,
            max_age=400 * 86400,
            path="/",
            secure=cookie_secure(settings),
            httponly=True,
            samesite="lax",
        )
    return response

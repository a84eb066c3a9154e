"""A small public-service portal that signs citizens in with e-ID (Starlette + Authlib).

It shows the three things a portal does: sign in with the authorization code flow and PKCE,
pre-fill a form from the citizen's claims, and require an assurance level (level 2) for a
sensitive service. Run it against a demo instance:

    eid serve --demo --port 9000 &
    EID_ISSUER=http://127.0.0.1:9000 uvicorn portal:app --port 8080
"""

from __future__ import annotations

import html
import os
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

LEVEL_2 = "urn:eid:loa:2"


def create_portal(
    issuer: str,
    client_id: str,
    client_secret: str,
    *,
    base_url: str = "http://127.0.0.1:8080",
    session_secret: str = "change-me",
) -> Starlette:
    oauth = OAuth()
    oauth.register(
        "eid",
        client_id=client_id,
        client_secret=client_secret,
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile phone address", "code_challenge_method": "S256"},
    )

    async def home(request: Request) -> Response:
        user = request.session.get("user")
        if not user:
            return HTMLResponse('<a href="/login">Đăng nhập bằng tài khoản định danh điện tử</a>')
        return RedirectResponse("/form", status_code=303)

    async def login(request: Request) -> Response:
        return await oauth.eid.authorize_redirect(request, f"{base_url}/callback", ui_locales="vi")

    async def login_level2(request: Request) -> Response:
        request.session["wants"] = "/level2"
        return await oauth.eid.authorize_redirect(request, f"{base_url}/callback", acr_values=LEVEL_2)

    async def callback(request: Request) -> Response:
        if request.query_params.get("error") == "unmet_authentication_requirements":
            return HTMLResponse(
                "<h1>Cần tài khoản định danh mức 2</h1><p>Hãy đăng ký mức 2 tại cơ quan công an.</p>", status_code=403
            )
        try:
            token = await oauth.eid.authorize_access_token(request)  # checks state, PKCE, ID token and nonce
        except OAuthError as exc:
            return HTMLResponse(f"<h1>Đăng nhập thất bại</h1><p>{html.escape(exc.error or '')}</p>", status_code=400)
        claims: dict[str, Any] = dict(token["userinfo"])
        claims |= await oauth.eid.userinfo(token=token)
        request.session["user"] = claims
        request.session["id_token"] = token["id_token"]
        return RedirectResponse(request.session.pop("wants", "/form"), status_code=303)

    async def form(request: Request) -> Response:
        user = request.session.get("user")
        if not user:
            return RedirectResponse("/login", status_code=303)

        def field(name: str, label: str, value: str | None) -> str:
            return f'<label>{label} <input name="{name}" value="{html.escape(value or "")}"></label>'

        address = (user.get("address") or {}).get("formatted")
        return HTMLResponse(
            "<form>"
            + field("full_name", "Họ và tên", user.get("name"))
            + field("birthdate", "Ngày sinh", user.get("birthdate"))
            + field("phone", "Điện thoại", user.get("phone_number"))
            + field("address", "Nơi cư trú", address)
            + "</form>"
        )

    async def level2(request: Request) -> Response:
        user = request.session.get("user") or {}
        if user.get("acr") != LEVEL_2:
            return RedirectResponse("/level2/login", status_code=303)
        return HTMLResponse("<h1>Dịch vụ mức 2</h1>")

    async def logout(request: Request) -> Response:
        id_token = request.session.get("id_token")
        request.session.clear()
        metadata = await oauth.eid.load_server_metadata()
        query = urlencode({"id_token_hint": id_token or "", "post_logout_redirect_uri": f"{base_url}/"})
        return RedirectResponse(f"{metadata['end_session_endpoint']}?{query}", status_code=303)

    app = Starlette(routes=[
        Route("/", home), Route("/login", login), Route("/level2/login", login_level2), Route("/callback", callback),
        Route("/form", form), Route("/level2", level2), Route("/logout", logout),
    ])  # fmt: skip
    app.add_middleware(SessionMiddleware, secret_key=session_secret, https_only=False, same_site="lax")
    return app


if os.environ.get("EID_ISSUER"):
    app = create_portal(
        os.environ["EID_ISSUER"],
        os.environ.get("PORTAL_CLIENT_ID", "demo-portal"),
        os.environ.get("PORTAL_CLIENT_SECRET", "demo-portal-secret-2026"),
    )

"""The provider's pages: a flow is bound to the browser that started it (no login CSRF, no session
fixation), pages speak one language at a time, and the register and reset pages work."""

from __future__ import annotations

import re

import httpx

from app.accounts.pages import TEXT as ACCOUNT_TEXT
from app.core.pages import COMMON
from app.oidc.i18n import TEXT as PROVIDER_TEXT
from tests.oidc.flow import authorize, form_fields, make_client, pkce_pair, sign_in_and_consent
from tests.support import Harness


async def login_page(browser: httpx.AsyncClient, client_id: str, **params: str) -> httpx.Response:
    _, challenge = pkce_pair()
    resp = await authorize(browser, client_id, challenge, **params)
    assert resp.status_code == 303, resp.text
    return await browser.get(resp.headers["location"])


async def test_a_login_form_posted_from_another_browser_signs_nobody_in(env: Harness) -> None:
    """Login CSRF: the attacker starts a request in their browser and makes the victim's browser
    post the login form with the attacker's credentials. It must fail, with nothing written."""
    attacker_citizen = await env.citizen()
    attacker_pw = await env.register_level1(attacker_citizen)
    client_id, _ = await make_client(env)
    async with env.browser() as attacker, env.browser() as victim, env.browser() as victim_with_cookie:
        page = await login_page(attacker, client_id)
        fields = form_fields(page.text)
        sessions_before = await env.count("citizen_sessions")
        codes_before = await env.count("oauth_codes")
        # A browser with none of the provider's cookies, and one with its own device cookie.
        await login_page(victim_with_cookie, client_id)
        for browser in (victim, victim_with_cookie):
            resp = await browser.post(
                "/login", data={**fields, "id_number": attacker_citizen["id_number"], "password": attacker_pw}
            )
            assert resp.status_code == 403, resp.text
            assert "eid_session" not in resp.headers.get("set-cookie", "")
            assert "eid_session" not in browser.cookies
            assert "trình duyệt khác" in resp.text
        assert await env.count("citizen_sessions") == sessions_before
        assert await env.count("oauth_codes") == codes_before
        # The login page itself is not shown in another browser either.
        resp = await victim.get(f"/login?req={fields['req']}")
        assert resp.status_code == 403
        # In the browser that started it, the same form works.
        resp = await attacker.post(
            "/login", data={**fields, "id_number": attacker_citizen["id_number"], "password": attacker_pw}
        )
        assert resp.status_code in (200, 303), resp.text


async def test_a_consent_form_from_another_browser_gives_no_code(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    client_id, _ = await make_client(env)
    async with env.browser() as mine, env.browser() as other:
        page = await login_page(mine, client_id)
        resp = await mine.post("/login", data={**form_fields(page.text), "id_number": c["id_number"], "password": pw})
        assert 'action="/consent"' in resp.text
        consent = form_fields(resp.text)
        codes_before = await env.count("oauth_codes")
        # Another browser given the session cookie value but not the device cookie: refused.
        other.cookies.set("eid_session", mine.cookies["eid_session"])
        resp = await other.post("/consent", data={**consent, "decision": "allow"})
        assert resp.status_code == 403
        assert await env.count("oauth_codes") == codes_before
        resp = await mine.post("/consent", data={**consent, "decision": "allow"})
        assert resp.status_code == 303 and "code=" in resp.headers["location"]


def _english_only_words() -> set[str]:
    """Words of the English texts that no Vietnamese text uses."""
    vi = " ".join(list(PROVIDER_TEXT["vi"].values()) + list(COMMON["vi"].values()) + list(ACCOUNT_TEXT["vi"].values()))
    en = " ".join(list(PROVIDER_TEXT["en"].values()) + list(COMMON["en"].values()) + list(ACCOUNT_TEXT["en"].values()))
    vi_words = set(re.findall(r"[A-Za-z]{4,}", vi))
    return {w for w in re.findall(r"[A-Za-z]{5,}", en) if w not in vi_words} - {"English"}


def _visible_text(page: str) -> str:
    page = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", page, flags=re.S)
    page = re.sub(r'<[^>]+lang="en"[^>]*>[^<]*<', "<", page)  # the language switch's own name
    return re.sub(r"<[^>]+>", " ", page)


async def test_pages_speak_the_language_asked_for_and_nothing_else(env: Harness) -> None:
    c = await env.citizen()
    await env.register_level1(c)
    client_id, _ = await make_client(env)
    english = _english_only_words()
    async with env.browser() as browser:
        vi = await login_page(browser, client_id)
        assert '<html lang="vi">' in vi.text and "Đăng nhập" in vi.text
        assert 'href="/register?req=' in vi.text and 'href="/password-reset?req=' in vi.text
        # An error page and a failed sign-in, still in Vietnamese only.
        failed = await browser.post(
            "/login", data={**form_fields(vi.text), "id_number": c["id_number"], "password": "wrong password 99"}
        )
        for page in (vi.text, failed.text, (await browser.get("/login?req=nope")).text):
            leaked = {w for w in english if re.search(rf"\b{w}\b", _visible_text(page))}
            assert not leaked, leaked
        # The switch on the page: to English, remembered for this browser.
        switch = re.search(r'href="(/lang\?to=en[^"]+)"', vi.text)
        assert switch is not None
        resp = await browser.get(switch.group(1).replace("&amp;", "&"))
        assert resp.status_code == 303
        en = await browser.get(resp.headers["location"])
        assert '<html lang="en">' in en.text and "Sign in" in en.text
    async with env.browser() as browser:  # ui_locales, then Accept-Language
        assert '<html lang="en">' in (await login_page(browser, client_id, ui_locales="en")).text
    async with env.browser() as browser:
        browser.headers["accept-language"] = "en-GB,en;q=0.9,vi;q=0.5"
        assert '<html lang="en">' in (await login_page(browser, client_id)).text
        browser.headers["accept-language"] = "vi-VN,vi;q=0.9,en;q=0.8"
        assert '<html lang="vi">' in (await login_page(browser, client_id)).text


async def test_the_language_switch_never_leaves_the_site(env: Harness) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        resp = await env.client.get("/lang", params={"to": "en", "next": target})
        assert resp.status_code == 303 and resp.headers["location"] == "/"


async def test_a_locked_account_with_the_right_password_is_told_until_when(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    client_id, _ = await make_client(env)
    for _ in range(5):
        r = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": "wrong pw 123"})
        assert r.status_code == 401
    async with env.browser() as browser:
        page = await login_page(browser, client_id)
        wrong = await browser.post(
            "/login", data={**form_fields(page.text), "id_number": c["id_number"], "password": "wrong pw 123"}
        )
        assert wrong.status_code == 401 and "tạm khóa đến" not in wrong.text
        right = await browser.post(
            "/login", data={**form_fields(page.text), "id_number": c["id_number"], "password": pw}
        )
        assert right.status_code == 403
        assert re.search(r"tạm khóa đến \d\d:\d\d \d\d/\d\d/\d{4}", right.text), right.text
        assert "eid_session" not in browser.cookies


async def test_signing_in_from_a_new_browser_is_notified(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    client_id, _ = await make_client(env)
    _, challenge = pkce_pair()
    async with env.browser() as first:
        await sign_in_and_consent(first, client_id, challenge, c["id_number"], pw)
    count = (await env.notices(c["phone"])).count("new_browser")
    async with env.browser() as second:
        await sign_in_and_consent(second, client_id, challenge, c["id_number"], pw)
        assert (await env.notices(c["phone"])).count("new_browser") == count + 1
        # Signing in again from the same browser is not news.
        await sign_in_and_consent(second, client_id, challenge, c["id_number"], pw, prompt="login")
        assert (await env.notices(c["phone"])).count("new_browser") == count + 1


# --- the register and reset pages -------------------------------------------------------------


def _hidden(page: str) -> dict[str, str]:
    return form_fields(page)


async def test_registering_through_the_pages(env: Harness) -> None:
    c = await env.citizen()
    async with env.browser() as browser:
        page = await browser.get("/register")
        assert page.status_code == 200 and '<html lang="vi">' in page.text
        assert 'for="id_number"' in page.text and 'autocomplete="one-time-code"' not in page.text
        # Invalid input is shown again with a Vietnamese message per field; nothing is written.
        before = await env.count("otp_challenges")
        bad = await browser.post("/register", data={**_hidden(page.text), "id_number": "123", "full_name": c["full_name"],
                                                    "date_of_birth": c["date_of_birth"], "phone": c["phone"]})  # fmt: skip
        assert bad.status_code == 422 and "12 chữ số" in bad.text and 'aria-invalid="true"' in bad.text
        assert await env.count("otp_challenges") == before
        resp = await browser.post("/register", data={**_hidden(page.text), **{k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}})  # fmt: skip
        assert resp.status_code == 303
        code_page = await browser.get(resp.headers["location"])
        assert "Nếu thông tin khớp" in code_page.text
        wrong = await browser.post("/register/code", data={**_hidden(code_page.text), "code": "000000"})
        assert wrong.status_code == 400 and "Mã không đúng" in wrong.text
        code = await env.last_otp(c["phone"])
        done = await browser.post("/register/code", data={**_hidden(code_page.text), "code": code})
        assert done.status_code == 200 and "đã được kích hoạt" in done.text
    assert await env.count("accounts", "id_number = :n", n=c["id_number"]) == 1


async def test_page_forms_refuse_a_post_without_this_browsers_token(env: Harness) -> None:
    c = await env.citizen()
    async with env.browser() as mine, env.browser() as other:
        page = await mine.get("/register")
        before = await env.count("otp_challenges")
        body = {**_hidden(page.text), **{k: c[k] for k in ("id_number", "full_name", "date_of_birth", "phone")}}
        resp = await other.post("/register", data=body)
        assert resp.status_code == 403
        resp = await mine.post("/register", data={**body, "csrf": "x" * 43})
        assert resp.status_code == 403
        assert await env.count("otp_challenges") == before


async def test_resetting_a_password_through_the_pages_ends_other_sessions(env: Harness) -> None:
    c = await env.citizen()
    pw = await env.register_level1(c)
    old = await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": pw})
    headers = {"Authorization": f"Bearer {old.json()['access_token']}"}
    async with env.browser() as browser:
        page = await browser.get("/password-reset")
        resp = await browser.post(
            "/password-reset", data={**_hidden(page.text), "id_number": c["id_number"], "phone": c["phone"]}
        )
        assert resp.status_code == 303
        code_page = await browser.get(resp.headers["location"])
        code = await env.last_otp(c["phone"])
        weak = await browser.post(
            "/password-reset/code", data={**_hidden(code_page.text), "code": code, "new_password": "short"}
        )
        assert weak.status_code == 422 and "ít nhất" in weak.text
        new = "a fresh passphrase for 2027"
        done = await browser.post(
            "/password-reset/code", data={**_hidden(code_page.text), "code": code, "new_password": new}
        )
        assert done.status_code == 200, done.text
    assert (await env.client.get("/me", headers=headers)).status_code == 401
    assert (
        await env.client.post("/accounts/sessions", json={"id_number": c["id_number"], "password": new})
    ).status_code == 201
    assert "password_reset" in await env.notices(c["phone"])

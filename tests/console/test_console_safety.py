"""What keeps the console safe, checked over HTTP against the running console and suite: headers, the
session cookie, CSRF on every POST, upload checks, and no key in cookies, URLs or logs."""

from __future__ import annotations

import json
from typing import Any

from services.console.security import CONTENT_SECURITY_POLICY
from tests.console.conftest import ALICE, ConsoleWorld, png, sign_in, start_console
from tests.service_process import free_port


def _csrf(page: Any) -> str:
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    return str(token)


def test_every_page_carries_a_strict_content_security_policy(world: ConsoleWorld, page: Any) -> None:
    reply = page.request.get(f"{world.url}/login")
    assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["x-frame-options"] == "DENY"


def test_the_session_cookie_is_httponly_strict_and_holds_no_key(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert ALICE not in cookie["value"]
    assert page.evaluate("() => document.cookie") == ""  # scripts cannot read it


def test_a_post_without_the_csrf_token_is_refused(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    headers = {"accept": "application/json"}
    for path, form in (("/search", {"text": "x"}), ("/ingest", {"license": "MIT"}), ("/logout", {})):
        missing = page.request.post(f"{world.url}{path}", multipart=form, headers=headers, max_redirects=0)
        assert missing.status == 403, (path, missing.status)
        forged = page.request.post(
            f"{world.url}{path}", multipart={**form, "csrf": "forged"}, headers=headers, max_redirects=0
        )
        assert forged.status == 403, (path, forged.status)
        assert "reload the page" in forged.json()["error"]


def test_uploads_are_checked_for_type_and_content(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    page.goto(f"{world.url}/ingest")
    token = _csrf(page)
    files = {
        "fake.png": ("image/png", b"<html><script>alert(1)</script></html>"),
        "page.html": ("text/html", b"<html></html>"),
    }
    outcomes = {}
    for name, (mime, data) in files.items():
        reply = page.request.post(
            f"{world.url}/ingest",
            multipart={
                "csrf": token,
                "license": "MIT",
                "files": {"name": name, "mimeType": mime, "buffer": data},
            },
            headers={"accept": "application/json"},
        )
        assert reply.status == 200
        (item,) = reply.json()["items"]
        outcomes[name] = item
    assert outcomes["fake.png"]["outcome"] == "refused"
    assert "not an image" in outcomes["fake.png"]["message"]
    assert outcomes["page.html"]["outcome"] == "refused"
    assert "text/html is not an accepted image type" in outcomes["page.html"]["message"]
    good = page.request.post(
        f"{world.url}/ingest",
        multipart={
            "csrf": token,
            "license": "MIT",
            "files": {"name": "safety-ok.png", "mimeType": "image/png", "buffer": png((10, 20, 30))},
        },
        headers={"accept": "application/json"},
    )
    assert [i["outcome"] for i in good.json()["items"]] == ["created"]


def test_a_bad_option_gets_a_precise_message(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    reply = page.goto(f"{world.url}/search?text=cat&alpha=1.5")
    assert reply is not None and reply.status == 400
    assert page.locator("#search-error").inner_text() == "alpha must be between 0 and 1 (got 1.5)"


def test_images_need_a_session_and_fall_back_to_a_placeholder(world: ConsoleWorld, page: Any) -> None:
    asset_id = world.sample[0].asset_id
    assert page.request.get(f"{world.url}/thumb/{asset_id}").status == 401
    sign_in(page, world.url)
    reply = page.request.get(f"{world.url}/thumb/{asset_id}")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith(("image/svg+xml", "image/jpeg", "image/png"))


def test_the_key_never_reaches_the_console_log(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    page.goto(f"{world.url}/status")
    log = world.log.read_text()
    assert ALICE not in log
    assert json.dumps(ALICE) not in log


def test_an_unknown_asset_is_a_404_page_that_says_so(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    reply = page.goto(f"{world.url}/asset/no-such-asset")
    assert reply is not None and reply.status == 404
    assert "no-such-asset" in page.locator("p.error").inner_text()


def test_an_unreachable_gateway_is_named_without_its_address(page: Any, tmp_path: Any) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proc, url = start_console(dead, tmp_path / "console.log")
    try:
        page.goto(f"{url}/login")
        page.get_by_label("API key").fill(ALICE)
        with page.expect_response(f"{url}/login") as posted:
            page.get_by_role("button", name="Sign in").click()
        assert posted.value.status == 503
        message = page.locator("#login-error").inner_text()
        assert message == "the gateway is unreachable; is the suite running?"
        assert dead not in page.content()
    finally:
        proc.terminate()
        proc.wait(20)

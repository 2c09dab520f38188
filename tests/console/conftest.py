"""The console against the running embedded suite (encoder, search, gateway as real processes), driven
by headless Chromium from Debian through Playwright. Screenshots of every page go to the artefacts
directory ($IMAGESEARCH_ARTIFACTS, default bench/results/console/; CI keeps it). Without Chromium the
tests skip, except under `make ci` (IMAGESEARCH_REQUIRE_BROWSER=1), where they fail."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from imagesearch.v1 import common_pb2, gateway_pb2

from tests.gateway.suite import SampleItem, Suite, missing_prerequisites, open_data_sample
from tests.service_process import REPO_ROOT, free_port

ARTIFACTS = Path(os.environ.get("IMAGESEARCH_ARTIFACTS", REPO_ROOT / "bench" / "results" / "console"))
ALICE = "acme-alice"  # tests/gateway/suite.py KEYRING: tenant acme, search + ingest + delete


def chromium_path() -> str | None:
    for candidate in (os.environ.get("IMAGESEARCH_CHROMIUM", ""), "chromium", "chromium-browser"):
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    return None


@dataclass
class ConsoleWorld:
    suite: Suite
    url: str
    sample: list[SampleItem]
    proc: subprocess.Popen[bytes]
    log: Path


def start_console(gateway_address: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "IMAGESEARCH_CONSOLE_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "IMAGESEARCH_CONSOLE_GATEWAY_ADDRESS": gateway_address,
        "IMAGESEARCH_CONSOLE_LOG_FORMAT": "console",
        "IMAGESEARCH_CONSOLE_LOG_LEVEL": "debug",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.console"], cwd=REPO_ROOT, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return proc, url
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError(log.read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    reason = missing_prerequisites()
    if reason:
        pytest.skip(reason)
    suite = Suite("embedded").start()
    proc = None
    try:
        sample = [i for i in open_data_sample(groups=4, extra=4)]
        requests = [
            gateway_pb2.IngestRequest(
                asset_id=i.asset_id,
                image=i.data,
                caption=i.caption,
                tags=[i.group, i.source],
                source=i.source,
                license=common_pb2.License(name="MIT"),
            )
            for i in sample
        ]
        suite.ingest_all_created(requests, [("authorization", f"Bearer {ALICE}")])
        log = tmp_path_factory.mktemp("console") / "console.log"
        assert suite.gateway is not None
        proc, url = start_console(suite.gateway.address, log)
        yield ConsoleWorld(suite, url, sample, proc, log)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        suite.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
    executable = chromium_path()
    if executable is None:
        why = "Chromium not installed: run scripts/install_chromium.sh (apt-get install chromium)"
        if os.environ.get("IMAGESEARCH_REQUIRE_BROWSER") == "1":  # make ci: the browser tests must run
            pytest.fail(why)
        pytest.skip(why)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    # A CSP violation or a script error is a failure, not a console message to ignore.
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    assert not [e for e in errors if "Content Security Policy" in e or "Refused" in e], errors


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Any, url: str, key: str = ALICE) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def png(color: tuple[int, int, int], size: int = 96) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), color)
    ImageDraw.Draw(image).ellipse((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def expect_visible(locator: Any) -> None:
    """Waits (Playwright's default timeout) for the element to be visible: `is_visible()` answers at
    once, before a script has drawn it."""
    from playwright.sync_api import expect

    expect(locator).to_be_visible()

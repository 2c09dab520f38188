"""The console in a real browser (headless Chromium), against the embedded suite: sign-in, search by
text and by uploaded image, an asset page, ingest with per-item outcomes, status, a refused key, and a
degraded answer shown as such. Every page is screenshotted to the artefacts directory."""

from __future__ import annotations

import re
from typing import Any

from tests.console.conftest import ALICE, ConsoleWorld, png, screenshot, sign_in


def test_a_refused_key_is_told_so_and_gets_no_session(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url, key="not-a-key")
    assert page.locator("#login-error").inner_text() == "The gateway refused this key."
    screenshot(page, "login-refused")
    page.goto(f"{world.url}/search")
    assert page.url.endswith("/login")  # still signed out


def test_search_by_text_shows_a_grid_with_scores_and_reasons(world: ConsoleWorld, page: Any) -> None:
    target = world.sample[0]
    sign_in(page, world.url)
    page.get_by_label("Text", exact=True).fill(target.caption)
    page.get_by_role("button", name="Search", exact=True).click()
    results = page.locator("li.result")
    assert results.count() >= 1
    captions = results.locator(".caption").all_inner_texts()
    assert target.caption in captions[:3], captions
    first = results.first
    assert first.locator("img").get_attribute("alt") == captions[0]  # alt text from the caption
    # Thumbnails always render: the stored one, or the placeholder while the gateway has none.
    assert page.evaluate(
        "() => [...document.querySelectorAll('.thumb img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    first.get_by_text("Why this result").click()
    assert first.locator("ul.policy li").count() >= 1
    assert "tenant" in first.locator("ul.policy").inner_text().lower()
    assert "key" not in page.url.lower() and ALICE not in page.url  # the key never travels in a URL
    screenshot(page, "search-results")


def test_search_by_uploaded_image_finds_that_image_first(
    world: ConsoleWorld, page: Any, tmp_path: Any
) -> None:
    target = world.sample[1]
    query = tmp_path / f"query{target.path.suffix}"
    query.write_bytes(target.data)
    sign_in(page, world.url)
    page.get_by_label("Example image").set_input_files(str(query))
    assert page.locator("#image-preview").is_visible()  # progressive enhancement: a preview
    page.get_by_role("button", name="Search", exact=True).click()
    first = page.locator("li.result").first
    assert first.locator(".caption").inner_text() == target.caption
    first.get_by_text("Why this result").click()
    assert re.search(r"image cosine\s*1\.000", first.locator("dl.all").inner_text()), first.inner_text()
    screenshot(page, "search-by-image")


def test_an_asset_page_shows_metadata_safety_and_more_like_this(world: ConsoleWorld, page: Any) -> None:
    target = world.sample[2]
    sign_in(page, world.url)
    page.get_by_label("Text", exact=True).fill(target.caption)
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator("li.result .thumb").first.click()
    # The search id (for click feedback) rides along once the gateway assigns one.
    assert re.search(r"/asset/[^?]+\?(s=[^&]+&)?r=1$", page.url), page.url
    main = page.locator("main").inner_text()
    assert "Licence" in main and "MIT" in main and "Safety score" in main
    assert "Text in the image (OCR)" in main
    assert page.locator("img.original").get_attribute("alt")
    screenshot(page, "asset")
    page.get_by_role("link", name="More like this").click()
    assert page.locator("li.result").count() >= 1
    screenshot(page, "more-like-this")


def test_ingest_two_files_and_see_them_appear(world: ConsoleWorld, page: Any, tmp_path: Any) -> None:
    files = []
    for name, color in (("console-teal-disc.png", (0, 128, 128)), ("console-plum-disc.png", (142, 69, 133))):
        path = tmp_path / name
        path.write_bytes(png(color))
        files.append(str(path))
    sign_in(page, world.url)
    page.get_by_role("link", name="Ingest").click()
    page.get_by_label("Images").set_input_files(files)
    page.get_by_label("Tags").fill("console-test")
    page.get_by_role("button", name="Ingest").click()
    page.locator("#ingest-progress").filter(has_text="2 of 2 stored").wait_for()
    rows = page.locator("#outcome-rows tr")
    assert rows.count() == 2
    assert rows.locator("td:nth-child(2)").all_inner_texts() == ["created", "created"]
    screenshot(page, "ingest")
    page.get_by_role("link", name="Search", exact=True).click()
    page.get_by_label("Text", exact=True).fill("console disc")
    page.get_by_role("button", name="Search", exact=True).click()
    captions = page.locator("li.result .caption").all_inner_texts()
    assert {"console teal disc", "console plum disc"} <= set(captions[:5]), captions


def test_status_page_shows_each_backend_and_the_model(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    page.get_by_role("link", name="Status").click()
    table = page.locator("table.health").inner_text()
    for component in ("gateway", "search", "encoder"):
        assert re.search(rf"{component}\s+serving", table), table
    assert page.locator("#not-degraded").is_visible()
    assert "imagesearch-demo-clip" in page.locator("#model").inner_text()
    screenshot(page, "status")


def test_a_degraded_answer_is_shown_as_such(world: ConsoleWorld, page: Any) -> None:
    """Last in the module: it stops the encoder. Text search falls back to keyword-only results."""
    assert world.suite.encoder is not None
    world.suite.encoder.stop()
    target = world.sample[3]
    sign_in(page, world.url)
    # A text no earlier test searched: the gateway caches query vectors and pages of earlier searches.
    page.get_by_label("Text", exact=True).fill(f"{target.caption} once more")
    page.get_by_role("button", name="Search", exact=True).click()
    banner = page.locator("#degraded-banner")
    assert banner.is_visible()
    assert "encoder" in banner.inner_text().lower()
    assert target.caption in page.locator("li.result .caption").all_inner_texts()  # keyword leg still answers
    screenshot(page, "degraded")
    page.get_by_role("link", name="Status").click()
    assert re.search(r"encoder\s+not serving", page.locator("table.health").inner_text())
    assert page.locator("#degraded-banner").is_visible()

"""The console in a real browser (headless Chromium), against the embedded suite: sign-in, search by
text and by uploaded image, an asset page, ingest with per-item outcomes, status, a refused key, and a
degraded answer shown as such. Every page is screenshotted to the artefacts directory."""

from __future__ import annotations

import re
import time
import urllib.request
from typing import Any

from tests.console.conftest import ALICE, ConsoleWorld, expect_visible, png, screenshot, sign_in


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
    results.first.wait_for()  # the results page has loaded
    assert results.count() >= 1
    captions = results.locator(".caption").all_inner_texts()
    assert target.caption in captions[:3], captions
    first = results.first
    assert first.locator("img").get_attribute("alt") == captions[0]  # alt text from the caption
    # Thumbnails always render: the stored one, or the placeholder while the gateway has none. (They
    # load lazily: the first row is in view.)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.thumb img')].slice(0, 3)"
        ".every(i => i.complete && i.naturalWidth > 0)"
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
    # Progressive enhancement: a preview, drawn once the browser has read the file (auto-waited).
    expect_visible(page.locator("#image-preview"))
    page.get_by_role("button", name="Search", exact=True).click()
    first = page.locator("li.result").first
    assert first.locator(".caption").inner_text() == target.caption
    first.get_by_text("Why this result").click()
    assert re.search(r"image cosine\s*1\.000", first.locator("dl.all").inner_text()), first.inner_text()
    screenshot(page, "search-by-image")


def test_a_dropped_image_searches_and_stays_while_the_search_is_refined(
    world: ConsoleWorld, page: Any
) -> None:
    target = world.sample[4]
    sign_in(page, world.url)
    transfer = page.evaluate_handle(
        """([bytes, name]) => {
            const t = new DataTransfer();
            t.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
            return t;
        }""",
        [list(png((200, 30, 30))), "dropped.png"],
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    expect_visible(page.locator("#image-preview"))
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator("li.result").first.wait_for()  # the results page has loaded
    keep = page.get_by_label("Keep searching with the image you gave")
    assert keep.is_checked()
    # Refining (adding text) keeps the image: the query uses both, and the image is still offered.
    page.get_by_label("Text", exact=True).fill(target.caption)
    page.get_by_role("button", name="Search", exact=True).click()
    assert "img=" in page.url
    first = page.locator("li.result").first
    first.get_by_text("Why this result").click()
    scores = first.locator("dl.all").inner_text()
    assert not re.search(r"image cosine\s*0\.000", scores), scores  # the image took part
    assert page.get_by_label("Keep searching with the image you gave").is_checked()


def test_results_page_forward(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    page.goto(f"{world.url}/search?text=face&n=5")
    first_page = page.locator("li.result .caption").all_inner_texts()
    assert len(first_page) == 5
    page.get_by_role("link", name="Next page").click()
    page.locator("li.result").first.wait_for()  # the next page has loaded
    assert "page=" in page.url
    second_page = page.locator("li.result").count()
    assert 1 <= second_page <= 5


def test_ingest_a_folder_keeps_each_path_as_the_asset_id(
    world: ConsoleWorld, page: Any, tmp_path: Any
) -> None:
    folder = tmp_path / "album"
    (folder / "beach").mkdir(parents=True)
    (folder / "beach" / "console-sand.png").write_bytes(png((220, 200, 150)))
    (folder / "console-sea.png").write_bytes(png((20, 60, 200)))
    (folder / "notes.txt").write_text("not an image: skipped")
    sign_in(page, world.url)
    page.goto(f"{world.url}/ingest")
    page.get_by_label("or a folder").set_input_files(str(folder))
    page.get_by_role("button", name="Ingest").click()
    page.locator("#ingest-progress").filter(has_text="2 of 2 stored").wait_for()
    ids = page.locator("#outcome-rows td:first-child").all_inner_texts()
    assert sorted(ids) == ["album/beach/console-sand.png", "album/console-sea.png"], ids


def test_ingest_works_without_javascript(world: ConsoleWorld, browser: Any, tmp_path: Any) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        path = tmp_path / "console-nojs-square.png"
        path.write_bytes(png((40, 160, 40)))
        sign_in(page, world.url)
        page.goto(f"{world.url}/ingest")
        page.get_by_label("Images").set_input_files(str(path))
        page.get_by_role("button", name="Ingest").click()
        assert page.locator("#ingest-progress").inner_text() == "1 of 1 stored"
        assert page.locator("#outcome-rows td:nth-child(2)").all_inner_texts() == ["created"]
    finally:
        context.close()


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
    page.locator("li.result").first.wait_for()  # the results page has loaded
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
    page.locator("li.result").first.wait_for()  # the results page has loaded
    captions = page.locator("li.result .caption").all_inner_texts()
    assert {"console teal disc", "console plum disc"} <= set(captions[:5]), captions


def test_results_are_reachable_by_keyboard(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    page.goto(f"{world.url}/search?text=face&n=5")
    first_link = page.locator("li.result a.thumb").first
    for _ in range(40):  # Tab through the page until the first result has focus
        page.keyboard.press("Tab")
        if first_link.evaluate("el => el === document.activeElement"):
            break
    else:
        raise AssertionError("the first result never received keyboard focus")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/asset/"))
    assert page.locator("h1").inner_text()


def test_a_click_on_a_result_is_recorded_as_feedback(world: ConsoleWorld, page: Any) -> None:
    assert world.suite.gateway is not None
    metrics = f"http://127.0.0.1:{world.suite.gateway.metrics_port}/metrics"
    before = clicks_recorded(metrics)
    sign_in(page, world.url)
    page.goto(f"{world.url}/search?text=face&n=5")
    page.locator("li.result a.thumb").first.click()
    page.wait_for_url(re.compile(r"/asset/.*[?&]s=[^&]+"))  # the link carries the search_id and rank
    deadline = time.monotonic() + 10  # sent without making the asset page wait for it
    while clicks_recorded(metrics) <= before:
        assert time.monotonic() < deadline, "the click never reached the gateway's feedback store"
        time.sleep(0.2)


def clicks_recorded(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_feedback_events_total{") and 'kind="click"' in line
    )


def test_opening_a_result_with_an_unknown_search_id_still_shows_it(world: ConsoleWorld, page: Any) -> None:
    """The gateway refuses feedback naming a search it never served; the click is lost, not the page."""
    sign_in(page, world.url)
    asset_id = world.sample[0].asset_id
    reply = page.goto(f"{world.url}/asset/{asset_id}?s=search-123&r=2")
    assert reply is not None and reply.status == 200
    page.reload()  # the same click again: one event id, still fine
    assert page.locator("h1").inner_text() == world.sample[0].caption


def test_status_page_shows_each_backend_and_the_model(world: ConsoleWorld, page: Any) -> None:
    sign_in(page, world.url)
    page.get_by_role("link", name="Status").click()
    table = page.locator("table.health").inner_text()
    for component in ("gateway", "search", "encoder"):
        assert re.search(rf"{component}\s+serving", table), table
    expect_visible(page.locator("#not-degraded"))
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
    expect_visible(banner)
    assert "encoder" in banner.inner_text().lower()
    assert target.caption in page.locator("li.result .caption").all_inner_texts()  # keyword leg still answers
    screenshot(page, "degraded")
    page.get_by_role("link", name="Status").click()
    # The gateway re-probes its backends every health interval: the page shows the next probe's verdict.
    deadline = time.monotonic() + 20
    while not re.search(r"encoder\s+not serving", page.locator("table.health").inner_text()):
        assert time.monotonic() < deadline, page.locator("table.health").inner_text()
        time.sleep(0.5)
        page.reload()
    expect_visible(page.locator("#degraded-banner"))

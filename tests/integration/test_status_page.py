"""The live status page (`/ui`) in headless Chromium, in front of the four-simulator fleet: it renders
every backend, the mode and the recent decisions with their num_ctx, escapes what clients sent, sets the
mode through `/efficiency`, pauses polling in a hidden tab, and with API keys works once it is given one."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fleet import LAPTOP, TIMEOUT

KEY = "page-test-key"
HOSTILE_MODEL = "<img src=x onerror=alert(1)>"


@pytest.fixture
async def browser_page() -> AsyncIterator[tuple[Any, list[str]]]:
    """A fresh page and the errors it reports (script errors and CSP violations show up as console errors)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            yield page, errors
        finally:
            await browser.close()


async def post(url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None,
               ) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.post(url + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def get(url: str, path: str, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.get(url + path, headers=headers) as r:
        await r.read()
        return r


def sized_chat(request_id: str, model: str = "llama3.2") -> dict[str, Any]:
    return {"model": model, "stream": False, "messages": [{"role": "user", "content": f"hello from {request_id}"}]}


async def test_page_shows_backends_mode_and_decisions(fleet_factory: Callable[..., Any], browser_page: Any,
                                                      tmp_path: Path) -> None:
    page, errors = browser_page
    fleet = await fleet_factory()
    status, _ = await post(fleet.url, "/proxy-context/auto/api/chat", sized_chat("page-1"),
                           {"X-Request-ID": "page-1"})
    assert status == 200
    status, _ = await post(fleet.url, "/api/chat", sized_chat("page-2", HOSTILE_MODEL), {"X-Request-ID": "page-2"})
    assert status == 404
    sized = next(d for d in (await fleet.get("/status"))["recent"] if d["request_id"] == "page-1")
    assert sized["num_ctx"] is not None

    await page.goto(fleet.url + "/ui")
    cards = page.locator("#backends article")
    await cards.first.wait_for()
    assert sorted(await page.locator("#backends h3").all_inner_texts()) == sorted(LAPTOP)
    assert await page.locator("#effective-mode").inner_text() == "balanced"
    assert await page.locator("#modes [aria-pressed=true]").inner_text() == "balanced"

    row = page.locator("#recent tbody tr", has=page.locator("td[title=page-1]"))
    cells = await row.locator("td").all_inner_texts()
    assert str(sized["num_ctx"]) in cells and sized["backend"] in cells and sized["sizing_reason"] in cells
    hostile = page.locator("#recent tbody tr", has=page.locator("td[title=page-2]"))
    assert HOSTILE_MODEL in await hostile.inner_text()  # shown as text, not parsed
    assert await page.locator("#recent img").count() == 0
    await page.screenshot(path=tmp_path / "status-page.png", full_page=True)

    await page.locator("#modes button", has_text="efficiency").first.click()
    await fleet.wait_for(lambda: _mode_is(fleet, "efficiency"), "the page's mode to reach GET /efficiency")
    await page.locator("#effective-mode", has_text="efficiency").wait_for()
    assert await page.locator("#modes [aria-pressed=true]").inner_text() == "efficiency"
    assert errors == []


async def _mode_is(fleet: Any, mode: str) -> bool:
    return bool((await fleet.get("/efficiency"))["mode"] == mode)


async def test_page_is_served_strictly(fleet_factory: Callable[..., Any]) -> None:
    fleet = await fleet_factory()
    for path, content_type in (("/ui", "text/html"), ("/ui/", "text/html"), ("/ui/status.js", "text/javascript"),
                               ("/ui/status.css", "text/css")):
        response = await get(fleet.url, path)
        assert response.status == 200 and response.content_type == content_type, path
        assert response.headers["Cache-Control"] == "no-cache"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    missing = await get(fleet.url, "/ui/secrets.txt")
    assert missing.status == 404 and missing.content_type == "application/json"


async def test_polling_pauses_while_the_tab_is_hidden(fleet_factory: Callable[..., Any], browser_page: Any) -> None:
    page, _ = browser_page
    fleet = await fleet_factory()
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if request.url.endswith("/status") else None)
    await page.goto(fleet.url + "/ui")
    await page.locator("#backends article").first.wait_for()
    await page.evaluate("""() => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    await asyncio.sleep(0.2)  # a poll already under way may still finish
    before = len(polls)
    await asyncio.sleep(2.0)  # longer than the page's 1.5 s poll interval
    assert len(polls) == before
    await page.evaluate("""() => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => false});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    await fleet.wait_for(lambda: _polled_since(polls, before), "a poll once the tab is visible again", 5)


async def _polled_since(polls: list[str], count: int) -> bool:
    return len(polls) > count


async def test_with_api_keys_the_page_works_once_given_the_key(
        sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any], browser_page: Any) -> None:
    page, errors = browser_page
    sims = {b: await sim_factory(profile=b) for b in ("igpu", "cpu")}
    url = await proxy_factory({"server": {"api_keys": [KEY]}, "system": {"nvidia_smi": "/nonexistent/nvidia-smi"},
                               "backends": [{"id": b, "hardware": b, "endpoint": s.url} for b, s in sims.items()]})
    keyed = {"Authorization": f"Bearer {KEY}"}
    assert (await get(url, "/status")).status == 401
    assert (await get(url, "/status", keyed)).status == 200
    assert (await get(url, "/ui")).status == 200  # the page's files hold no data

    await page.goto(url + "/ui")
    await page.locator("#key-form").wait_for()
    assert await page.locator("#content").is_hidden()
    await page.fill("#key-input", "wrong")
    await page.press("#key-input", "Enter")
    await page.locator("#key-error", has_text="refused").wait_for()

    await page.fill("#key-input", KEY)
    await page.press("#key-input", "Enter")
    await page.locator("#backends article").first.wait_for()
    assert sorted(await page.locator("#backends h3").all_inner_texts()) == ["cpu", "igpu"]
    assert KEY not in page.url
    await page.locator("#modes button", has_text="quiet").click()
    await page.locator("#effective-mode", has_text="quiet").wait_for()
    assert (await (await get(url, "/efficiency", keyed)).json())["mode"] == "quiet"
    # Refused requests log a console error in Chromium; only the two 401s the key prompt answered may.
    assert [e for e in errors if "401" not in e] == []

"""The console in a real headless browser: Debian's chromium, driven by Playwright.

Playwright's own browser download cannot work here, so it drives ``/usr/bin/chromium``.
Without chromium or playwright the test skips with the reason (and fails under ``CI=true``).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import httpx

from tests.backends.oidc import skip_or_fail

from .conftest import PASSWORD, USER, Served

CHROMIUM = "/usr/bin/chromium"


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


async def test_the_console_in_a_browser(served: Served, tmp_path: Path) -> None:
    reason = _missing()
    if reason:
        skip_or_fail(reason)
    from playwright.async_api import async_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    network = served.network
    console = served.console
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            # (4) Without a session, every page sends the browser to the login form, and
            # every data endpoint is refused.
            anonymous = await browser.new_page()
            for path in ["", "jobs", "boards", "audit", "planner"]:
                await anonymous.goto(console + path)
                assert "/console/login" in anonymous.url, path
                assert await anonymous.locator("input[name=password]").count() == 1
            for path in ["network", "jobs", "boards", "audit", "planner"]:
                response = await anonymous.request.get(f"{console}api/{path}")
                assert response.status == 401, path
            await anonymous.screenshot(path=str(shots / "login.png"), full_page=True)
            await anonymous.close()

            # (1) Log in; every agent of the demo network is in the tree, and up.
            page = await browser.new_page()
            await page.goto(console)
            await page.fill("input[name=user]", USER)
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(console)
            for name in network.agents:
                row = page.locator(f'tr[data-agent="{name}"]')
                assert await row.get_attribute("data-status") == "up", name
            await page.screenshot(path=str(shots / "network.png"), full_page=True)

            # (2) add_user through the bridge: the job appears (by the page's own refresh,
            # without reloading) and its trace opens.
            await page.goto(console + "jobs")
            await network.submit("add_project physics.portal")
            await network.submit("add_user alice.physics.portal")
            row = page.locator("tr.job", has_text="add_user alice.physics.portal")
            await row.first.wait_for(timeout=20_000)
            await page.screenshot(path=str(shots / "jobs.png"), full_page=True)
            await row.first.locator("a").click()
            await page.wait_for_selector("table.trace")
            trace = await page.locator("table.trace").inner_text()
            for hop in ("bridge", "portal", "instance", "account"):
                assert hop in trace, hop
            await page.screenshot(path=str(shots / "job.png"), full_page=True)
            for name in ("boards", "audit", "planner"):
                await page.goto(console + name)
                await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            await page.goto(console + "audit")
            assert "Chain verified" in await page.locator(".banner.ok").inner_text()

            # (3) Stop an agent: the open network page shows it down by itself.
            await page.goto(console)
            await network.roles["scheduler"].stop()
            await network.agents["scheduler"].stop()
            scheduler = page.locator('tr[data-agent="scheduler"][data-status="down"]')
            await scheduler.wait_for(timeout=20_000)
            await page.screenshot(path=str(shots / "network-down.png"), full_page=True)

            # Logging out ends the session: the pages send the browser to the login again.
            await page.click("header .logout button")
            await page.wait_for_url("**/console/login")
            await page.goto(console + "jobs")
            assert "/console/login" in page.url
        finally:
            await browser.close()
    for name in ("login", "network", "jobs", "job", "boards", "audit", "planner", "network-down"):
        assert (shots / f"{name}.png").stat().st_size > 1000, name
    # Nothing the pages load comes from elsewhere: the one stylesheet is the bridge's own.
    async with httpx.AsyncClient() as http:
        css = await http.get(console + "static/console.css")
    assert css.status_code == 200 and "http" not in css.text

"""Browser tests: Debian's Chromium driven by Playwright, against a real `garagebook serve`.

Every test starts its own server on a freshly reset database (slot ids restart, and the
server's plan cache must not outlive them). Under CI=true a missing Chromium fails the run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import ROOT, ServerProcess
from tests.support.stack import Stack, service_missing

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
# The README's screenshots are refreshed with UPDATE_SCREENSHOTS=1; otherwise a run leaves the
# working tree alone and writes them to a temporary folder.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "garagebook-screenshots"
)
STAFF_NAME = "sam"
STAFF_PASSWORD = "correct horse battery"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright
except ImportError as exc:  # pragma: no cover - the test extra installs it
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if _IMPORT_ERROR is not None:
        service_missing("playwright", _IMPORT_ERROR)
    if not os.access(CHROMIUM, os.X_OK):
        service_missing("Chromium", FileNotFoundError(CHROMIUM))
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
def web_overrides() -> dict[str, str]:
    """Server environment a test adds (parametrize `web_overrides` to change it)."""
    return {}


@pytest.fixture
def web(
    stack: Stack, start_server: Callable[..., ServerProcess], web_overrides: dict[str, str]
) -> ServerProcess:
    return start_server(stack.env(SESSION_SECRET="browser-test-secret", **web_overrides))


class Browsing:
    """New browser contexts (one per person), each failing the test on a script error or an
    alert/confirm dialog it did not expect."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    async def page(self, viewport: dict[str, int] | None = None, **options: Any) -> Page:
        context = await self.browser.new_context(
            base_url=self.base_url,
            viewport=viewport or DESKTOP,  # type: ignore[arg-type]
            timezone_id="America/New_York",  # the page must show the garage's times, not ours
            accept_downloads=True,
            **options,
        )
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )
        page.on("dialog", self._dialog)
        return page

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm":
            await dialog.accept()  # staff confirming a cancel
        else:
            await dialog.dismiss()

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def browsing(browser: Browser, web: ServerProcess) -> AsyncIterator[Browsing]:
    session = Browsing(browser, web.url)
    yield session
    await session.close()
    assert session.errors == [], "script errors or CSP violations in the page"
    assert not [d for d in session.dialogs if not d.startswith("confirm:")], session.dialogs


@pytest.fixture
async def api_client(web: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
        yield client


@pytest.fixture
def staff_user(web: ServerProcess, stack: Stack) -> str:
    """`garagebook staff add sam`, as an operator would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "garagebook.cli", "staff", "add", STAFF_NAME, "--password-stdin"],
        input=STAFF_PASSWORD + "\n",
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert STAFF_NAME in result.stdout
    return STAFF_NAME


# --- accessibility ---------------------------------------------------------------------------

_AXE: str | None = None


def axe_source() -> str:
    global _AXE
    if _AXE is None:
        import axe_playwright_python  # ships axe-core's axe.min.js; no download at test time

        _AXE = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()
    return _AXE


async def assert_accessible(page: Page) -> None:
    """axe-core finds no serious or critical violation. Injected by the DevTools protocol,
    which the page's CSP does not govern (the CSP stays on while the page is tested)."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(axe_source() + "\n;undefined")
    violations = await page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations
              .filter(v => v.impact === "serious" || v.impact === "critical")
              .map(v => `${v.id} (${v.impact}): ` +
                        v.nodes.map(n => n.target.join(" ")).join(", "));
        }"""
    )
    assert violations == [], f"axe-core on {page.url}: {violations}"


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# --- the customer's journey, step by step -----------------------------------------------------


async def open_day(page: Page, service: str, day: str | None = None) -> None:
    """From `/`: the service, then `day` (ISO date) or the first bookable day."""
    await page.goto("/")
    await page.get_by_role("link", name=re.compile(f"^{re.escape(service)}")).click()
    await page.locator("#step-day").wait_for()
    if day is None:
        await page.locator("ul.days a.choice").first.click()
    else:
        await page.locator(f'ul.days a[href*="date={day}"]').click()
    await page.locator("#step-time").wait_for()


async def time_buttons(page: Page) -> list[str]:
    return await page.locator("#times button.time").all_text_contents()


async def hold_time(page: Page, label: str) -> None:
    await page.locator("#times button.time", has_text=label).first.click()
    await page.locator("#hold").wait_for(state="visible")


async def fill_details(
    page: Page, name: str = "Ada Lovelace", email: str = "ada@example.com"
) -> None:
    await page.get_by_label("Full name").fill(name)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Phone").fill("+44 7700 900123")
    await page.get_by_label("Vehicle registration").fill("ab12cde")
    await page.get_by_label("Make").fill("Ford")
    await page.get_by_label("Model").fill("Focus")


async def confirm(page: Page) -> str:
    """Confirm; returns the cancel token from the confirmation page's address."""
    await page.get_by_role("button", name="Confirm booking").click()
    await page.wait_for_url(re.compile(r"/manage/[^/]+$"))
    return page.url.rsplit("/", 1)[1]


async def book_through_page(
    page: Page, service: str, name: str = "Ada Lovelace", day: str | None = None
) -> str:
    await open_day(page, service, day)
    await hold_time(page, await page.locator("#times button.time").first.inner_text())
    await fill_details(page, name=name)
    return await confirm(page)


async def sign_in(page: Page, password: str = STAFF_PASSWORD) -> None:
    await page.goto("/staff/login")
    await page.get_by_label("Name").fill(STAFF_NAME)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()

"""/docs renders without internet (issue 13, point 9): Chromium with every host but the
server refused still shows the API's operations, and asks no other host for anything."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Route, expect

from tests.browser.conftest import Browsing

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]


async def test_docs_render_with_other_hosts_refused(browsing: Browsing) -> None:
    page = await browsing.page()
    refused: list[str] = []

    async def only_the_server(route: Route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "::1"):
            await route.continue_()
        else:
            refused.append(route.request.url)
            await route.abort("internetdisconnected")

    await page.context.route("**/*", only_the_server)
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("garagebook")
    await expect(page.get_by_text("/api/bookings", exact=True).first).to_be_visible()
    assert refused == []
    assert browsing.errors == []

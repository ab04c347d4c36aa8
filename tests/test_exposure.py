"""What the server shows to anyone who asks (security review, finding 6): /metrics only with
METRICS_TOKEN as a bearer token, and /docs, /redoc, /openapi.json only with API_DOCS on —
whose Swagger UI then comes from our own server (issue 13, point 9; the browser test in
tests/browser/test_docs_offline.py renders it with every other host refused)."""

from __future__ import annotations

import re

import pytest

from tests.support.mail import running_app
from tests.support.stack import METRICS_HEADERS, Stack


async def test_docs_and_schema_are_off_unless_enabled(stack: Stack) -> None:
    async with running_app(stack.settings(api_docs=False)) as api:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs-assets/swagger-ui-bundle.js"):
            answer = await api.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["error"]["code"] == "not_found"


async def test_docs_when_enabled_load_nothing_from_other_hosts(stack: Stack) -> None:
    async with running_app(stack.settings(api_docs=True)) as api:
        page = await api.get("/docs")
        assert page.status_code == 200
        assert "/openapi.json" in page.text
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources, page.text
        assert all(source.startswith("/") for source in sources), sources
        assert "https://" not in page.text.replace("https://validator", "")
        for source in sources:
            asset = await api.get(source)
            assert asset.status_code == 200, source
        assert (await api.get("/openapi.json")).json()["info"]["title"] == "garagebook"


async def test_metrics_need_their_token(stack: Stack) -> None:
    async with running_app(stack.settings(metrics_token=None)) as api:
        assert (await api.get("/metrics")).status_code == 404
        assert (await api.get("/metrics", headers=METRICS_HEADERS)).status_code == 404
    async with running_app(stack.settings()) as api:
        assert (await api.get("/metrics")).status_code == 401
        wrong = await api.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        answer = await api.get("/metrics", headers=METRICS_HEADERS)
        assert answer.status_code == 200
        assert "garagebook_booking_attempts_total" in answer.text


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
async def test_the_defaults_show_neither(stack: Stack) -> None:
    """A server configured only by the environment a deployment gives it."""
    async with running_app(stack.settings(api_docs=False, metrics_token=None)) as api:
        assert (await api.get("/metrics")).status_code == 404
        assert (await api.get("/openapi.json")).status_code == 404
        assert (await api.get("/health")).status_code == 200

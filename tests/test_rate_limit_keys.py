"""Rate limits that hold (security review, finding 3's IPv6 part and finding 11): an IPv6 client
is counted by its /64, and with Redis gone the limits — sign-in first — are counted in-process
instead of being switched off."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager

from garagebook.app import create_app
from garagebook.ratelimit import client_key
from tests.support.processes import RedisProcess
from tests.support.stack import Stack
from tests.test_rate_limits import app_with_limits, client_at
from tests.test_web_pages import add_staff, sign_in


def test_client_keys() -> None:
    assert client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.5") == "203.0.113.5"
    assert client_key("203.0.113.5") == "203.0.113.5"


async def test_ipv6_clients_are_counted_by_their_64(stack: Stack) -> None:
    async with app_with_limits(stack, rate_limit_holds="2/minute") as app:
        statuses = []
        for address in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2:1234:5678:9:a"):
            async with client_at(app, address) as client:
                statuses.append((await client.post("/api/holds", json={})).status_code)
        assert statuses == [422, 422, 429]
        async with client_at(app, "2001:db8:1:3::1") as neighbour:
            assert (await neighbour.post("/api/holds", json={})).status_code == 422


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_limits_hold_while_redis_is_down(stack: Stack, own_redis: RedisProcess) -> None:
    settings = stack.settings(
        redis_url=own_redis.url,
        rate_limit_exempt="",
        rate_limit_sign_in="3/minute",
        rate_limit_holds="2/minute",
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        await add_staff(app)
        own_redis.stop()
        transport = httpx.ASGITransport(app=manager.app, client=("203.0.113.20", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://garagebook.test") as api:
            answers = [(await sign_in(api, "wrong password")).status_code for _ in range(3)]
            assert answers == [401, 401, 401]
            refused = await sign_in(api)
            assert refused.status_code == 429
            holds = [(await api.post("/api/holds", json={})).status_code for _ in range(3)]
            assert holds == [422, 422, 429]

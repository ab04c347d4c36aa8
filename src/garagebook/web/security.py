"""Security headers for the pages (not the JSON API, whose /docs loads Swagger's assets).

The CSP allows only our own scripts, styles and connections: no inline script can run, so
even an escaping mistake would not execute a customer's `<script>`. `no-referrer` keeps the
cancel token in `/manage/...` URLs from leaking to other sites."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
_PAGE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# Pages with a customer's or the day's data are never stored by browsers or proxies.
_PRIVATE_PREFIXES = ("/manage", "/staff", "/waitlist")
_PAGE_PREFIXES = ("/manage", "/staff", "/static", "/book", "/waitlist")


def is_page(path: str) -> bool:
    return path == "/" or path.startswith(_PAGE_PREFIXES)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith(_PRIVATE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers.extend(h for h in _PAGE_HEADERS if h[0] not in names)
                if private and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)

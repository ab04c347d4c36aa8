"""Settings, read once from the environment (and a `.env` file); a bad value fails at start."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import limits
from email_validator import EmailNotValidError, validate_email
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SMTP_SCHEMES = {
    "smtp": "opportunistic",  # STARTTLS when the server offers it (aiosmtplib's default)
    "smtp+starttls": "starttls",  # STARTTLS required
    "smtps": "tls",  # TLS from the first byte (port 465)
}


@dataclass(frozen=True)
class SmtpServer:
    """Where mail goes, parsed from SMTP_URL: smtp://, smtp+starttls:// or smtps://."""

    host: str
    port: int | None  # None: the scheme's usual port (25, 587 with STARTTLS, 465 with TLS)
    security: str  # "opportunistic", "starttls" or "tls"
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        security = _SMTP_SCHEMES.get(parts.scheme.lower())
        if security is None:
            raise ValueError("SMTP_URL must start with smtp://, smtp+starttls:// or smtps://")
        if not parts.hostname:
            raise ValueError("SMTP_URL has no host")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("SMTP_URL has a bad port") from None
        if port is None and security == "starttls":
            port = 587
        return cls(
            host=parts.hostname,
            port=port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def describe(self) -> str:
        """For logs: never the credentials."""
        return f"smtp {self.host}:{self.port or 'default'} ({self.security})"


class Settings(BaseSettings):
    # Errors name the variable but not its value: SMTP_URL may carry a password.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    # Stores
    database_url: str = "sqlite+aiosqlite:///./garagebook.db"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_timeout_seconds: float = Field(default=5.0, gt=0)
    redis_url: str | None = None
    redis_timeout_ms: int = Field(default=250, ge=1, le=10_000)
    redis_pool_size: int = Field(default=64, ge=1, le=10_000)
    redis_key_prefix: str = "garagebook:"
    redis_retry_seconds: float = Field(default=1.0, gt=0)

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    admin_token: SecretStr | None = None
    # Signs staff session cookies and CSRF tokens; unset = random per process (see README).
    session_secret: SecretStr | None = None
    # Signs the manage links in customer mails (garagebook.manage_links); unset = derived from
    # SESSION_SECRET, or random per process when that is unset too (see README).
    manage_link_secret: SecretStr | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # The server itself (garagebook/serving.py): headers, reads, idle connections, concurrency.
    max_header_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    http_read_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    keep_alive_timeout_seconds: int = Field(default=75, ge=1, le=3600)
    max_concurrency: int = Field(default=2000, ge=10)  # connections or requests per process
    # Proxies whose X-Forwarded-For / -Proto are believed ("10.0.0.5,10.0.1.0/24", "*"); none.
    forwarded_allow_ips: str = ""
    # Prometheus: /metrics needs `Authorization: Bearer $METRICS_TOKEN`; unset, it answers 404.
    metrics_token: SecretStr | None = None
    api_docs: bool = False  # /docs and /openapi.json (on in `make run`)

    # Booking rules
    reservation_ttl_seconds: int = Field(default=300, ge=1)
    # An in-flight request's keys live this long (at most the TTL), until its booking commits
    # and they get the TTL: a request that dies with its process blocks its slots no longer.
    reservation_lease_seconds: int = Field(default=5, ge=1)
    hold_ttl_seconds: int = Field(default=300, ge=1, le=3600)

    # Abuse protection, per client address (limits' notation: "20/minute", "5/second")
    rate_limit_bookings: str = "20/minute"
    rate_limit_holds: str = "30/minute"
    rate_limit_cancels: str = "10/minute"
    rate_limit_sign_in: str = "10/minute"  # staff sign-in attempts: password guessing
    max_holds_per_client: int = Field(default=3, ge=1)  # per HOLD_TTL_SECONDS
    # Live (confirmed, not yet over) bookings one customer may make online; 0 = no cap.
    # Staff (walk-ins) and admin-token bookings are not capped.
    max_live_bookings_per_email: int = Field(default=4, ge=0, le=10_000)
    max_live_bookings_per_registration: int = Field(default=3, ge=0, le=10_000)
    max_bookings_per_email_per_day: int = Field(default=2, ge=0, le=10_000)
    # How long a retry with the same Idempotency-Key gets the booking back (Stripe: 24 h).
    idempotency_ttl_hours: int = Field(default=24, ge=1, le=24 * 30)
    # Not limited: the machine itself (health checks, the concurrency test run on the host).
    rate_limit_exempt: str = "127.0.0.0/8,::1"
    garage_name: str = "garagebook demo garage"
    garage_timezone: str = "Europe/London"
    # Shown on the pages and in the mails (garagebook.garage_info); empty = not shown.
    garage_address: str = "1 Station Road, Anytown AB1 2CD"
    garage_phone: str = "01632 960000"

    # Reminders, the waitlist and the MOT
    reminder_hours_before: int = Field(default=24, ge=0, le=24 * 14)  # 0: no reminders
    waitlist_hold_minutes: int = Field(default=30, ge=1, le=24 * 60)
    mot_reminder_days: int = Field(default=30, ge=1, le=366)
    mot_service_name: str = "MOT"  # the service whose completion renews a vehicle's MOT

    # Mail: SMTP when SMTP_URL is set, else one .eml file per message in MAIL_DROP_DIR
    smtp_url: SecretStr | None = None  # secret: it may carry the SMTP password
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    mail_from: str = "bookings@garagebook.localhost"
    mail_drop_dir: Path = Path("var/mail")
    public_url: str = "http://127.0.0.1:3000"  # base of the links in the mails

    # Background jobs: the outbox worker (embedded in the server, or `garagebook worker`)
    embedded_worker: bool | None = None  # unset: on for SQLite, off for PostgreSQL
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    worker_lease_seconds: float = Field(default=60.0, gt=0)
    worker_shutdown_seconds: float = Field(default=10.0, ge=0)
    job_timeout_seconds: float = Field(default=120.0, gt=0)
    job_max_attempts: int = Field(default=20, ge=1, le=1000)  # ≥ 1 h 40 min of retrying
    job_retry_base_seconds: float = Field(default=10.0, gt=0)
    job_retry_max_seconds: float = Field(default=900.0, gt=0)
    job_retention_days: float = Field(default=30.0, gt=0)  # finished jobs, then pruned

    # A customer's data (customers/): bookings that ended this many months ago lose their
    # personal data (the worker, daily); 0 = kept until erased on request. See README.
    personal_data_retention_months: int = Field(default=72, ge=0, le=1200)
    rate_limit_personal_data: str = "20/hour"  # exports and erasures, per client address
    # Webhooks (garagebook/webhooks): retried and buried like any job (JOB_* above)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)  # one delivery, all in
    # Networks a receiver may be in although they are not public ("127.0.0.0/8"); none.
    webhook_allow_networks: str = ""
    # Seals the receivers' signing secrets in the database; unset: derived from SESSION_SECRET,
    # or stored unsealed when that is unset too (see README, "Webhooks").
    webhook_secret_key: SecretStr | None = None

    log_level: str = "INFO"

    @field_validator(
        "rate_limit_bookings",
        "rate_limit_holds",
        "rate_limit_cancels",
        "rate_limit_sign_in",
        "rate_limit_personal_data",
    )
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        limits.parse(value)  # raises ValueError for a bad rate
        return value

    @field_validator("rate_limit_exempt", "webhook_allow_networks")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        for network in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        for part in filter(None, (part.strip() for part in value.split(","))):
            if part != "*" and not part.startswith("unix:"):
                ipaddress.ip_network(part, strict=False)
        return value

    @field_validator("garage_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value

    @field_validator("smtp_url")
    @classmethod
    def _valid_smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            SmtpServer.from_url(value.get_secret_value())
        return value

    @field_validator("mail_from")
    @classmethod
    def _valid_sender(cls, value: str) -> str:
        _, address = parseaddr(value)
        try:
            Address(addr_spec=address)
        except Exception:  # the email package raises several kinds for a bad address
            address = ""
        if "@" not in address:
            raise ValueError("MAIL_FROM must be an address, e.g. 'Garage <bookings@example.com>'")
        return value

    @field_validator("public_url")
    @classmethod
    def _valid_public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("PUBLIC_URL must be an http(s) URL, e.g. https://book.example.com")
        return value.rstrip("/")

    @field_validator(
        "redis_url",
        "admin_token",
        "smtp_url",
        "embedded_worker",
        "session_secret",
        "metrics_token",
        "manage_link_secret",
        "webhook_secret_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.garage_timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def runs_embedded_worker(self) -> bool:
        """SQLite means one process, so it delivers its own mail; PostgreSQL deployments run
        `garagebook worker` processes instead, unless EMBEDDED_WORKER says otherwise."""
        return self.is_sqlite if self.embedded_worker is None else self.embedded_worker

    @property
    def smtp(self) -> SmtpServer | None:
        return SmtpServer.from_url(self.smtp_url.get_secret_value()) if self.smtp_url else None

    def garage_mail_address(self, local_part: str) -> str:
        """An address at the garage's own mail domain (MAIL_FROM's) for bookings that have no
        customer address: walk-ins without one. A domain the booking path
        would refuse (the demo's `.localhost`) is replaced by a reserved example domain."""
        return _address_at(local_part, self.mail_from)

    @property
    def walk_in_email(self) -> str:
        return self.garage_mail_address("walk-in")

    def is_placeholder_address(self, address: str) -> bool:
        """Whether `address` is one of the garage's own placeholders: nobody reads it, so no
        mail goes there — a walk-in without an address, or an erased customer's bookings, which
        carry an `@invalid` one (customers/). (Closed times are closures: no address.)"""
        return address == self.walk_in_email or address.endswith("@invalid")

    @property
    def mail_sender(self) -> Address:
        """MAIL_FROM as an address; without a display name, the garage's name is shown."""
        name, address = parseaddr(self.mail_from)
        return Address(display_name=name or self.garage_name, addr_spec=address)


@lru_cache(maxsize=64)
def _address_at(local_part: str, mail_from: str) -> str:
    """Cached: every booking asks whether its address is the walk-in placeholder, and
    validating the placeholder each time was 2 % of a booking's CPU (py-spy, make bench)."""
    address = f"{local_part}@{Address(addr_spec=parseaddr(mail_from)[1]).domain}"
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return f"{local_part}@garage.example"
    return address


@lru_cache
def get_settings() -> Settings:
    return Settings()

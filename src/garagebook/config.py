"""Settings, read once from the environment (and a `.env` file); a bad value fails at start."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Stores
    database_url: str = "sqlite+aiosqlite:///./garagebook.db"
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_timeout_seconds: float = Field(default=5.0, gt=0)
    redis_url: str | None = None
    redis_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    redis_pool_size: int = Field(default=64, ge=1, le=10_000)
    redis_key_prefix: str = "garagebook:"
    redis_retry_seconds: float = Field(default=1.0, gt=0)

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    admin_token: SecretStr | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # Booking rules
    reservation_ttl_seconds: int = Field(default=300, ge=1)
    garage_name: str = "garagebook demo garage"
    garage_timezone: str = "Europe/London"

    log_level: str = "INFO"

    @field_validator("garage_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value

    @field_validator("redis_url", "admin_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.garage_timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()

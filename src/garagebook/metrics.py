"""Prometheus metrics, served at /metrics. Each server process counts its own (scrape every
worker, or run one worker per container); the gauges are read when scraped."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import Scope

BOOKING_OUTCOMES = Counter(
    "garagebook_booking_attempts_total",
    "POST /api/bookings outcomes",
    ["outcome"],  # created, replayed, rejected_reservation, rejected_database, invalid, unavailable
)
RESERVATION_LAYER_SKIPPED = Counter(
    "garagebook_reservation_layer_skipped_total",
    "Reservation calls skipped because Redis was unreachable or slow (the database decided)",
)
RESERVATION_BREAKER_OPENS = Counter(
    "garagebook_reservation_breaker_opens_total",
    "Times the circuit breaker in front of Redis opened",
)
RESERVATION_LAYER_UP = Gauge(
    "garagebook_reservation_layer_up",
    "1 while the reservation layer works (Redis answering, or in-process), 0 while degraded",
)
HTTP_REQUESTS = Counter(
    "garagebook_http_requests_total", "HTTP requests", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "garagebook_http_request_duration_seconds",
    "HTTP request duration",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_JOBS = Gauge("garagebook_outbox_jobs", "Mail jobs by state", ["state"])
OUTBOX_OLDEST_DUE = Gauge(
    "garagebook_outbox_oldest_due_seconds", "How long the oldest due mail job has waited"
)
DB_POOL_IN_USE = Gauge(
    "garagebook_db_pool_connections_in_use", "Database connections checked out of the pool"
)


_request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def record_request(scope: Scope, status: int, seconds: float) -> None:
    """Count and time a request by its route template (never the raw path: ids in paths would
    make one series per booking). The labelled children are cached: a lookup per request."""
    route = getattr(scope.get("route"), "path", "unmatched")
    key = (route, scope["method"], status)
    series = _request_series.get(key)
    if series is None:
        series = (
            HTTP_REQUESTS.labels(route, scope["method"], str(status)),
            HTTP_LATENCY.labels(route),
        )
        _request_series[key] = series
    series[0].inc()
    series[1].observe(seconds)

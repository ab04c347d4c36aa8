"""Prometheus metrics, served at /metrics (per process: each worker counts its own)."""

from prometheus_client import Counter

BOOKING_OUTCOMES = Counter(
    "garagebook_booking_attempts_total",
    "POST /api/bookings outcomes",
    ["outcome"],  # created, replayed, rejected_reservation, rejected_database, invalid, unavailable
)
RESERVATION_LAYER_SKIPPED = Counter(
    "garagebook_reservation_layer_skipped_total",
    "Reservation calls skipped because Redis was unreachable or slow (the database decided)",
)

"""The tables, as SQLAlchemy Core metadata for queries.

The schema itself is owned by the Alembic migrations in `migrations/`; this file mirrors them
so queries are typed. `tests/test_schema.py` checks the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite (naive storage) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, datetime)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


metadata = MetaData()

services = Table(
    "services",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("duration_minutes", Integer, nullable=False),
    Column("price_pence", Integer, nullable=False),
    # The setup document's (garage/): matched by `key`; retired (active false), never deleted.
    Column("key", String(40), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("needs", String(40), nullable=False, server_default="general"),
    Column("active", Boolean, nullable=False, server_default=text("1")),
)

bays = Table(
    "bays",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("capabilities", Text, nullable=False, server_default="general"),  # "mot,general"
    Column("active", Boolean, nullable=False, server_default=text("1")),
)

slots = Table(
    "slots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("bay_id", Integer, ForeignKey("bays.id"), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    # Offered while the setup document says so (inside the hours, on an active bay, not a
    # closed day); the booking statement claims only open slots.
    Column("open", Boolean, nullable=False, server_default=text("1")),
    UniqueConstraint("bay_id", "starts_at", name="uq_slots_bay_id_starts_at"),
    Index("ix_slots_starts_at", "starts_at"),
)

customers = Table(
    "customers",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("phone", String(32)),
    Column("updated_at", UTCDateTime, nullable=False),
)

vehicles = Table(
    "vehicles",
    metadata,
    Column("registration", String(16), primary_key=True),
    Column("make", String(50)),
    Column("model", String(50)),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("mot_expires_on", Date),  # the MOT certificate's expiry (the garage's local date)
    Column("mot_reminded_for", Date),  # the expiry the last MOT reminder was sent for
    Index("ix_vehicles_mot_expires_on", "mot_expires_on"),
)

bookings = Table(
    "bookings",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("reference", String(16), nullable=False, unique=True),
    Column("slot_id", Integer, ForeignKey("slots.id"), nullable=False),
    Column("service_id", Integer, ForeignKey("services.id"), nullable=False),
    # Deferred: the booking row goes first, so a losing request stops at its first statement.
    Column(
        "customer_email",
        String(254),
        ForeignKey("customers.email", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
    Column("customer_name", String(100), nullable=False),
    Column("customer_phone", String(32)),
    Column(
        "vehicle_registration",
        String(16),
        ForeignKey("vehicles.registration", deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
    Column("vehicle_make", String(50)),
    Column("vehicle_model", String(50)),
    Column("notes", Text),
    Column("status", String(16), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("cancelled_at", UTCDateTime),
    Column("cancel_token_hash", String(64)),
    Column("sequence", Integer, nullable=False, server_default=text("0")),
    Column("completed_at", UTCDateTime),  # staff marked it done (status `completed`)
    # The MOT expiry the customer gave for their car through the manage link: theirs, not the
    # car's record (`vehicles.mot_expires_on` is what staff entered or a completed MOT set).
    Column("mot_expires_on", Date),
    Column("mot_reminded_for", Date),
    Column("price_pence", Integer),  # as booked: a later price change does not touch it
    Index("uq_bookings_cancel_token_hash", "cancel_token_hash", unique=True),
    Index("ix_bookings_customer_email", "customer_email"),
    Index("ix_bookings_vehicle_registration", "vehicle_registration"),
    Index(
        "uq_bookings_slot_id_not_cancelled",
        "slot_id",
        unique=True,
        sqlite_where=text("status <> 'cancelled'"),
        postgresql_where=text("status <> 'cancelled'"),
    ),
)

booking_slots = Table(
    "booking_slots",
    metadata,
    Column("booking_id", String(32), ForeignKey("bookings.id"), primary_key=True),
    Column("slot_id", Integer, ForeignKey("slots.id"), primary_key=True),
    Column("active", Boolean, nullable=False),
    Index(
        "uq_booking_slots_slot_id_active",
        "slot_id",
        unique=True,
        sqlite_where=text("active"),
        postgresql_where=text("active"),
    ),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("booking_id", String(32), ForeignKey("bookings.id"), nullable=False),
    Column("response_body", Text, nullable=False),  # as answered, without the manage token
    Column("created_at", UTCDateTime, nullable=False),
    # The manage token sealed with the Idempotency-Key (bookings/idempotency.py); `key` is the
    # key's SHA-256, never the key itself.
    Column("token_sealed", Text),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("run_at", UTCDateTime, nullable=False),
    Column("locked_until", UTCDateTime),
    Column("locked_by", String(64)),  # the worker holding (or that last held) the lease
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("done_at", UTCDateTime),
    Index("ix_outbox_status_run_at", "status", "run_at"),
)

# The setup document (garage/document.py), one row; the values the booking statement reads at
# booking time are columns of their own.
garage = Table(
    "garage",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("document", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("slot_minutes", Integer, nullable=False),
    Column("min_notice_minutes", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

garage_changes = Table(
    "garage_changes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("lines", Text, nullable=False),  # what changed, one readable line each
)

staff_users = Table(
    "staff_users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Sign-out and a password change add one: every session cookie issued before ends.
    Column("session_version", Integer, nullable=False, server_default="0"),
    # 'owner': may change the garage's settings and the staff accounts; 'staff': the day's work.
    Column("role", String(10), nullable=False, server_default="staff"),
    CheckConstraint("role IN ('owner', 'staff')", name="ck_staff_users_role"),
)

# The cancellation waitlist. An entry is `waiting` → `offered` (it has one open offer) →
# `booked`; an offer left unanswered ends the entry (`lapsed`) and passes the time on;
# `left` when the customer takes themselves off the list.
waitlist_entries = Table(
    "waitlist_entries",
    metadata,
    Column("id", Integer, primary_key=True),  # first come, first served: the order is the id
    Column("service_id", Integer, ForeignKey("services.id"), nullable=False),
    Column("day", Date, nullable=False),  # the garage's local date
    Column("customer_email", String(254), nullable=False),
    Column("customer_name", String(100), nullable=False),
    Column("customer_phone", String(32)),
    Column("vehicle_registration", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("booking_id", String(32), ForeignKey("bookings.id")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("leave_token_hash", String(64), nullable=False),
    Index("ix_waitlist_entries_day_status", "day", "status", "id"),
    Index(
        "uq_waitlist_entries_active",
        "service_id",
        "day",
        "customer_email",
        unique=True,
        sqlite_where=text("status IN ('waiting', 'offered')"),
        postgresql_where=text("status IN ('waiting', 'offered')"),
    ),
    Index("uq_waitlist_entries_leave_token_hash", "leave_token_hash", unique=True),
)

_OPEN = text("status = 'open'")

waitlist_offers = Table(
    "waitlist_offers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("entry_id", Integer, ForeignKey("waitlist_entries.id"), nullable=False),
    Column("slot_id", Integer, ForeignKey("slots.id"), nullable=False),  # the start slot
    Column("slot_ids", Text, nullable=False),  # every covered slot, "12,13,14"
    Column("hold_token", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False),  # of the link's token
    Column("status", String(16), nullable=False),  # open, accepted, expired, lost
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("decided_at", UTCDateTime),
    Index("uq_waitlist_offers_token_hash", "token_hash", unique=True),
    Index(
        "uq_waitlist_offers_entry_id_open",
        "entry_id",
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    ),
    Index(
        "uq_waitlist_offers_slot_id_open",
        "slot_id",
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    ),
)

# Webhooks (migration 0011): subscriptions, and the delivery log staff read and replay from.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("events", String(200), nullable=False),  # "booking.created,booking.cancelled"
    Column("secret_sealed", Text, nullable=False),  # webhooks/sealing.py
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", UTCDateTime, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("webhook_id", Integer, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("job_id", Integer),  # the outbox job (pruned later: no foreign key)
    Column("event_id", String(64), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("payload", Text, nullable=False),  # the job's payload: ids only, for a replay
    Column("attempt", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),  # delivered, failed, refused
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
)

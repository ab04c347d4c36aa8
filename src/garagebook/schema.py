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
    # Capacity (issue 15): the technician skill it needs, the technician's minutes, and
    # whether the customer picks a time (`timed`) or a day to leave the car (`drop_off`).
    Column("skill", String(40), nullable=False, server_default="general"),
    Column("labour_minutes", Integer),  # NULL: the service's minutes
    Column("mode", String(10), nullable=False, server_default="timed"),
    CheckConstraint("mode IN ('timed', 'drop_off')", name="ck_services_mode"),
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

# Technicians (issue 15), from the setup document like bays: matched by name, retired (active
# false), never deleted. `hours` is their week as the document gives it (JSON, weekday →
# ["HH:MM-HH:MM", …]); NULL: the garage's hours.
technicians = Table(
    "technicians",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("skills", Text, nullable=False, server_default="general"),  # "mot_tester,general"
    Column("hours", Text),
    Column("active", Boolean, nullable=False, server_default=text("1")),
)

# A technician's time on the garage's grid, as `slots` is a bay's: created by the calendar
# (garage/calendar.py) for the hours they work, open while they work them (an absence closes
# them). A timed booking claims the technician's slots for its whole time in
# `technician_claims`, as it claims its bay's in `booking_slots`.
technician_slots = Table(
    "technician_slots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("technician_id", Integer, ForeignKey("technicians.id"), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("open", Boolean, nullable=False, server_default=text("1")),
    UniqueConstraint(
        "technician_id", "starts_at", name="uq_technician_slots_technician_id_starts_at"
    ),
    Index("ix_technician_slots_starts_at", "starts_at"),
)

# A technician's day as a checked counter: the minutes they work (from their hours) and the
# minutes booked (timed bookings: their whole time; drop-offs: their labour minutes). The
# booking's statement adds its minutes only `WHERE booked + mine <= working AND NOT absent`,
# and the check is the database's last word, on both backends: a row lock serialises the
# writers of one day on PostgreSQL, SQLite has one writer.
technician_days = Table(
    "technician_days",
    metadata,
    Column("technician_id", Integer, ForeignKey("technicians.id"), primary_key=True),
    Column("day", Date, primary_key=True),  # the garage's local date
    Column("minutes_working", Integer, nullable=False),
    Column("minutes_booked", Integer, nullable=False, server_default=text("0")),
    Column("absent", Boolean, nullable=False, server_default=text("0")),
    CheckConstraint(
        "minutes_booked >= 0 AND minutes_booked <= minutes_working",
        name="ck_technician_days_within_hours",
    ),
)

# Absences staff enter (holiday, sick day, training), a day or a range of local days. They
# close the technician's slots and mark their days absent; bookings already made are kept and
# flagged for reassignment, never dropped.
absences = Table(
    "absences",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("technician_id", Integer, ForeignKey("technicians.id"), nullable=False),
    Column("first_day", Date, nullable=False),
    Column("last_day", Date, nullable=False),
    Column("reason", String(200)),
    Column("entered_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("withdrawn_at", UTCDateTime),  # NULL while it holds
    CheckConstraint("last_day >= first_day", name="ck_absences_last_day_after_first"),
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
    # The first slot of its bay time; NULL for a drop-off, which takes no bay time, only a
    # technician's minutes (`technician_minutes`).
    Column("slot_id", Integer, ForeignKey("slots.id")),
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
    # The technician it took (issue 15); NULL in a garage whose document lists none.
    Column("technician_id", Integer, ForeignKey("technicians.id")),
    # The minutes it added to that technician's day (technician_days), given back on cancel
    # or move; NULL before migration 0013: the booking's length.
    Column("technician_minutes", Integer),
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

# Staff closing a time: no customer, no booking row, no mail. A closure claims its slots in
# `booking_slots`, the same claim space as bookings (`active` while not reopened), so the one
# partial unique index there decides between a closure and a booking, on both databases.
closures = Table(
    "closures",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("bay_id", Integer, ForeignKey("bays.id"), nullable=False),
    Column("starts_at", UTCDateTime, nullable=False),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("reason", String(200)),
    Column("closed_by", String(100), nullable=False),  # a staff user's name, "admin", "setup"
    Column("created_at", UTCDateTime, nullable=False),
    Column("reopened_at", UTCDateTime),  # NULL while the closure holds its slots
    Column("reopened_by", String(100)),
    CheckConstraint("ends_at > starts_at", name="ck_closures_ends_after_start"),
    Index("ix_closures_starts_at", "starts_at"),
)

# The claims on slots: each row is a booking's or a closure's (exactly one of the two), and
# one index says a slot has at most one active claim, whoever holds it. One table rather than
# a second claims table for closures: a unique index cannot span two tables, and a trigger
# would be a second guarantee to keep in step on two databases.
booking_slots = Table(
    "booking_slots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("booking_id", String(32), ForeignKey("bookings.id")),
    Column("closure_id", Integer, ForeignKey("closures.id")),
    Column("slot_id", Integer, ForeignKey("slots.id"), nullable=False),
    Column("active", Boolean, nullable=False),
    CheckConstraint(
        "(booking_id IS NULL) <> (closure_id IS NULL)", name="ck_booking_slots_one_owner"
    ),
    Index("uq_booking_slots_booking_id_slot_id", "booking_id", "slot_id", unique=True),
    Index("uq_booking_slots_closure_id_slot_id", "closure_id", "slot_id", unique=True),
    Index(
        "uq_booking_slots_slot_id_active",
        "slot_id",
        unique=True,
        sqlite_where=text("active"),
        postgresql_where=text("active"),
    ),
)

# The claims on technicians' slots: the same guarantee as `booking_slots`, one active claim
# per technician slot, by a partial unique index on both backends.
technician_claims = Table(
    "technician_claims",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("booking_id", String(32), ForeignKey("bookings.id"), nullable=False),
    Column("technician_slot_id", Integer, ForeignKey("technician_slots.id"), nullable=False),
    Column("active", Boolean, nullable=False),
    Index(
        "uq_technician_claims_booking_id_technician_slot_id",
        "booking_id",
        "technician_slot_id",
        unique=True,
    ),
    Index(
        "uq_technician_claims_technician_slot_id_active",
        "technician_slot_id",
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

# Calendar feeds (feeds/): the token is the only key, so only its hash is kept; `bay_id` NULL
# is the whole garage. Revoked feeds keep their row (`revoked_at`) and answer 404.
calendar_feeds = Table(
    "calendar_feeds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False),
    Column("label", String(100), nullable=False),
    Column("bay_id", Integer, ForeignKey("bays.id")),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Index("uq_calendar_feeds_token_hash", "token_hash", unique=True),
)

# Every export and erasure of a customer's data, and every retention run (customers/): who,
# when, whose (the SHA-256 of the lower-cased address, never the address), and counts.
personal_data_audit = Table(
    "personal_data_audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("action", String(16), nullable=False),  # export, erase, retention
    Column("subject_hash", String(64)),
    Column("actor", String(100), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_personal_data_audit_at", "at"),
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

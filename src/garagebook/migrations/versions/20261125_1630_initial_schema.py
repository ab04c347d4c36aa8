"""initial schema: services, bays, slots, customers, vehicles, bookings, claims, idempotency, outbox

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("duration_minutes", sa.Integer, nullable=False),
        sa.Column("price_pence", sa.Integer, nullable=False),
        sa.CheckConstraint("duration_minutes > 0", name="ck_services_duration_positive"),
        sa.CheckConstraint("price_pence >= 0", name="ck_services_price_not_negative"),
    )
    op.create_table(
        "bays",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
    )
    op.create_table(
        "slots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bay_id", sa.Integer, sa.ForeignKey("bays.id"), nullable=False),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("ends_at > starts_at", name="ck_slots_ends_after_start"),
        # Overlap on a bay is refused under a lock on the bay row (slots/service.py);
        # this is the backstop for the common case of an identical start.
        sa.UniqueConstraint("bay_id", "starts_at", name="uq_slots_bay_id_starts_at"),
    )
    op.create_index("ix_slots_starts_at", "slots", ["starts_at"])
    op.create_table(
        "customers",
        sa.Column("email", sa.String(254), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("phone", sa.String(32)),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "vehicles",
        sa.Column("registration", sa.String(16), primary_key=True),
        sa.Column("make", sa.String(50)),
        sa.Column("model", sa.String(50)),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "bookings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("reference", sa.String(16), nullable=False, unique=True),
        sa.Column("slot_id", sa.Integer, sa.ForeignKey("slots.id"), nullable=False),
        sa.Column("service_id", sa.Integer, sa.ForeignKey("services.id"), nullable=False),
        sa.Column(
            "customer_email",
            sa.String(254),
            sa.ForeignKey("customers.email", deferrable=True, initially="DEFERRED"),
            nullable=False,
        ),
        sa.Column("customer_name", sa.String(100), nullable=False),
        sa.Column("customer_phone", sa.String(32)),
        sa.Column(
            "vehicle_registration",
            sa.String(16),
            sa.ForeignKey("vehicles.registration", deferrable=True, initially="DEFERRED"),
            nullable=False,
        ),
        sa.Column("vehicle_make", sa.String(50)),
        sa.Column("vehicle_model", sa.String(50)),
        sa.Column("notes", sa.Text),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("cancelled_at", TIMESTAMP),
        sa.CheckConstraint("status IN ('confirmed', 'cancelled')", name="ck_bookings_status_known"),
    )
    op.create_index("ix_bookings_customer_email", "bookings", ["customer_email"])
    op.create_table(
        "booking_slots",
        sa.Column("booking_id", sa.String(32), sa.ForeignKey("bookings.id"), primary_key=True),
        sa.Column("slot_id", sa.Integer, sa.ForeignKey("slots.id"), primary_key=True),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("booking_id", sa.String(32), sa.ForeignKey("bookings.id"), nullable=False),
        sa.Column("response_body", sa.Text, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("run_at", TIMESTAMP, nullable=False),
        sa.Column("locked_until", TIMESTAMP),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("done_at", TIMESTAMP),
    )
    op.create_index("ix_outbox_status_run_at", "outbox", ["status", "run_at"])


def downgrade() -> None:
    for table in (
        "outbox",
        "idempotency_keys",
        "booking_slots",
        "bookings",
        "vehicles",
        "customers",
        "slots",
        "bays",
        "services",
    ):
        op.drop_table(table)

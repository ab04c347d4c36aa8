"""waitlist, MOT due dates and finished bookings

- `vehicles.mot_expires_on` (the MOT certificate's expiry, a local date) and
  `vehicles.mot_reminded_for` (the expiry the last MOT reminder was sent for: once per expiry);
- `bookings.completed_at` (staff mark a booking done; status `completed` keeps its claims);
- `waitlist_entries` (who waits for which service on which local day, first come first served)
  and `waitlist_offers` (a freed time held for one waiting person). At most one open offer per
  entry and per start slot, and one active entry per customer, service and day, enforced by
  partial unique indexes.

Revision ID: 0007_waitlist_and_mot
Revises: 0006_booking_sequence
Create Date: 2026-11-25 19:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_waitlist_and_mot"
down_revision: str | None = "0006_booking_sequence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("status = 'open'")
_ACTIVE = sa.text("status IN ('waiting', 'offered')")


def upgrade() -> None:
    op.add_column("vehicles", sa.Column("mot_expires_on", sa.Date))
    op.add_column("vehicles", sa.Column("mot_reminded_for", sa.Date))
    op.create_index("ix_vehicles_mot_expires_on", "vehicles", ["mot_expires_on"])
    op.add_column("bookings", sa.Column("completed_at", sa.DateTime(timezone=True)))
    op.create_index("ix_bookings_vehicle_registration", "bookings", ["vehicle_registration"])

    op.create_table(
        "waitlist_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("service_id", sa.Integer, sa.ForeignKey("services.id"), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("customer_email", sa.String(254), nullable=False),
        sa.Column("customer_name", sa.String(100), nullable=False),
        sa.Column("customer_phone", sa.String(32)),
        sa.Column("vehicle_registration", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("booking_id", sa.String(32), sa.ForeignKey("bookings.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leave_token_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_waitlist_entries_day_status", "waitlist_entries", ["day", "status", "id"])
    op.create_index(
        "uq_waitlist_entries_active",
        "waitlist_entries",
        ["service_id", "day", "customer_email"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    op.create_index(
        "uq_waitlist_entries_leave_token_hash",
        "waitlist_entries",
        ["leave_token_hash"],
        unique=True,
    )

    op.create_table(
        "waitlist_offers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("entry_id", sa.Integer, sa.ForeignKey("waitlist_entries.id"), nullable=False),
        sa.Column("slot_id", sa.Integer, sa.ForeignKey("slots.id"), nullable=False),
        sa.Column("slot_ids", sa.Text, nullable=False),
        sa.Column("hold_token", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
    )
    op.create_index("uq_waitlist_offers_token_hash", "waitlist_offers", ["token_hash"], unique=True)
    op.create_index(
        "uq_waitlist_offers_entry_id_open",
        "waitlist_offers",
        ["entry_id"],
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )
    op.create_index(
        "uq_waitlist_offers_slot_id_open",
        "waitlist_offers",
        ["slot_id"],
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )


def downgrade() -> None:
    op.drop_table("waitlist_offers")
    op.drop_table("waitlist_entries")
    op.drop_index("ix_bookings_vehicle_registration", "bookings")
    op.drop_column("bookings", "completed_at")
    op.drop_index("ix_vehicles_mot_expires_on", "vehicles")
    op.drop_column("vehicles", "mot_reminded_for")
    op.drop_column("vehicles", "mot_expires_on")

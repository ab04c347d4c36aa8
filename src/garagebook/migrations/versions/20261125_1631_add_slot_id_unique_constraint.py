"""add slot_id unique constraint: at most one non-cancelled booking, and one active claim, per slot

This is the final guarantee against double booking; everything in front of it is a speed-up.

Revision ID: 0002_slot_unique
Revises: 0001_initial
Create Date: 2026-11-25 16:31:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_slot_unique"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_CANCELLED = sa.text("status <> 'cancelled'")
ACTIVE = sa.text("active")


def upgrade() -> None:
    op.create_index(
        "uq_bookings_slot_id_not_cancelled",
        "bookings",
        ["slot_id"],
        unique=True,
        sqlite_where=NOT_CANCELLED,
        postgresql_where=NOT_CANCELLED,
    )
    op.create_index(
        "uq_booking_slots_slot_id_active",
        "booking_slots",
        ["slot_id"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_booking_slots_slot_id_active", table_name="booking_slots")
    op.drop_index("uq_bookings_slot_id_not_cancelled", table_name="bookings")

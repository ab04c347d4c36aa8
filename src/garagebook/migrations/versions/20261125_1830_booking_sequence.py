"""booking sequence: how many times a booking was moved (the .ics SEQUENCE, so calendars
update the entry rather than add one)

Revision ID: 0006_booking_sequence
Revises: 0005_staff_users
Create Date: 2026-11-25 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_booking_sequence"
down_revision: str | None = "0005_staff_users"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("bookings", sa.Column("sequence", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("bookings", "sequence")

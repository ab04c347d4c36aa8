"""bookings may be `completed`

Migration 0007 added `bookings.completed_at` for bookings staff mark done, but the status check
of the initial schema still allowed only `confirmed` and `cancelled`, so no booking could be
completed. This widens the check; existing rows satisfy it, so nothing else changes. (SQLite
cannot alter a constraint: batch mode copies the table, its indexes included.)

Revision ID: 0008_completed_status
Revises: 0007_waitlist_and_mot
Create Date: 2026-11-25 20:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_completed_status"
down_revision: str | None = "0007_waitlist_and_mot"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ck_bookings_status_known"


def _status_check(statuses: str) -> None:
    with op.batch_alter_table("bookings", recreate="auto") as batch:
        batch.drop_constraint(_NAME, type_="check")
        batch.create_check_constraint(_NAME, f"status IN ({statuses})")


def upgrade() -> None:
    _status_check("'confirmed', 'cancelled', 'completed'")


def downgrade() -> None:
    # A completed booking was a confirmed one that took place.
    op.execute("UPDATE bookings SET status = 'confirmed' WHERE status = 'completed'")
    _status_check("'confirmed', 'cancelled'")

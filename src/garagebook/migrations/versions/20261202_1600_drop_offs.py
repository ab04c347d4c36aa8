"""drop-offs: a booking may take no slot, only a technician's minutes (issue 15)

A drop-off booking (a car left for the day) takes `labour_minutes` of one qualified
technician's day and no bay time: its `slot_id` is NULL. Every booking that takes a technician
now records the minutes it added to their day (`technician_minutes`), so a cancel or a move
gives back exactly those; bookings made before it (a timed booking counted its whole time)
have NULL, read as their length.

On SQLite the nullable column means rebuilding `bookings` (batch mode). Its partial unique
index is dropped first and made again after: a rebuild does not carry an index's WHERE.

Revision ID: 0013_drop_offs
Revises: 0012_technicians
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_drop_offs"
down_revision: str | None = "0012_technicians"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOT_CANCELLED = sa.text("status <> 'cancelled'")


def _index_slot_ids() -> None:
    op.create_index(
        "uq_bookings_slot_id_not_cancelled",
        "bookings",
        ["slot_id"],
        unique=True,
        sqlite_where=_NOT_CANCELLED,
        postgresql_where=_NOT_CANCELLED,
    )


def upgrade() -> None:
    op.drop_index("uq_bookings_slot_id_not_cancelled", table_name="bookings")
    with op.batch_alter_table("bookings") as batch:
        batch.alter_column("slot_id", existing_type=sa.Integer, nullable=True)
        batch.add_column(sa.Column("technician_minutes", sa.Integer))
    _index_slot_ids()


def downgrade() -> None:
    # Drop-off bookings have no slot to put back: refuse rather than lose them.
    bind = op.get_bind()
    if bind.scalar(sa.text("SELECT count(*) FROM bookings WHERE slot_id IS NULL")):
        raise RuntimeError("drop-off bookings exist: they cannot be kept without a slot")
    op.drop_index("uq_bookings_slot_id_not_cancelled", table_name="bookings")
    with op.batch_alter_table("bookings") as batch:
        batch.drop_column("technician_minutes")
        batch.alter_column("slot_id", existing_type=sa.Integer, nullable=False)
    _index_slot_ids()

"""technicians: their slots, claims, days (a checked counter) and absences (issue 15)

Services gain `skill` (the technician skill they need, default "general"), `labour_minutes`
(NULL: the service's minutes) and `mode` (`timed` | `drop_off`); bookings gain the
technician they took (NULL where the garage lists none, as every booking made before).
`technician_claims` repeats `booking_slots`' guarantee for technicians' slots: one active
claim per slot, by a partial unique index, on both backends. `technician_days` is a checked
counter: no technician's booked minutes in a day past the minutes they work.

Revision ID: 0012_technicians
Revises: 0011_hooks_webhooks
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_technicians"
down_revision: str | None = "0011_hooks_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(
            sa.Column("skill", sa.String(40), nullable=False, server_default="general")
        )
        batch.add_column(sa.Column("labour_minutes", sa.Integer))
        batch.add_column(sa.Column("mode", sa.String(10), nullable=False, server_default="timed"))
        batch.create_check_constraint("ck_services_mode", "mode IN ('timed', 'drop_off')")
    op.create_table(
        "technicians",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("skills", sa.Text, nullable=False, server_default="general"),
        sa.Column("hours", sa.Text),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "technician_slots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("technician_id", sa.Integer, sa.ForeignKey("technicians.id"), nullable=False),
        sa.Column("starts_at", _MOMENT, nullable=False),
        sa.Column("ends_at", _MOMENT, nullable=False),
        sa.Column("open", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.UniqueConstraint(
            "technician_id", "starts_at", name="uq_technician_slots_technician_id_starts_at"
        ),
    )
    op.create_index("ix_technician_slots_starts_at", "technician_slots", ["starts_at"])
    op.create_table(
        "technician_days",
        sa.Column("technician_id", sa.Integer, sa.ForeignKey("technicians.id"), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("minutes_working", sa.Integer, nullable=False),
        sa.Column("minutes_booked", sa.Integer, nullable=False, server_default="0"),
        sa.Column("absent", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.CheckConstraint(
            "minutes_booked >= 0 AND minutes_booked <= minutes_working",
            name="ck_technician_days_within_hours",
        ),
    )
    op.create_table(
        "absences",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("technician_id", sa.Integer, sa.ForeignKey("technicians.id"), nullable=False),
        sa.Column("first_day", sa.Date, nullable=False),
        sa.Column("last_day", sa.Date, nullable=False),
        sa.Column("reason", sa.String(200)),
        sa.Column("entered_by", sa.String(100), nullable=False),
        sa.Column("created_at", _MOMENT, nullable=False),
        sa.Column("withdrawn_at", _MOMENT),
        sa.CheckConstraint("last_day >= first_day", name="ck_absences_last_day_after_first"),
    )
    with op.batch_alter_table("bookings") as batch:
        batch.add_column(
            sa.Column(
                "technician_id",
                sa.Integer,
                sa.ForeignKey("technicians.id", name="fk_bookings_technician_id_technicians"),
            )
        )
    op.create_table(
        "technician_claims",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("booking_id", sa.String(32), sa.ForeignKey("bookings.id"), nullable=False),
        sa.Column(
            "technician_slot_id",
            sa.Integer,
            sa.ForeignKey("technician_slots.id"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean, nullable=False),
    )
    op.create_index(
        "uq_technician_claims_booking_id_technician_slot_id",
        "technician_claims",
        ["booking_id", "technician_slot_id"],
        unique=True,
    )
    op.create_index(
        "uq_technician_claims_technician_slot_id_active",
        "technician_claims",
        ["technician_slot_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )


def downgrade() -> None:
    op.drop_table("technician_claims")
    with op.batch_alter_table("bookings") as batch:
        batch.drop_column("technician_id")
    op.drop_table("absences")
    op.drop_table("technician_days")
    op.drop_index("ix_technician_slots_starts_at", table_name="technician_slots")
    op.drop_table("technician_slots")
    op.drop_table("technicians")
    with op.batch_alter_table("services") as batch:
        batch.drop_constraint("ck_services_mode", type_="check")
        batch.drop_column("mode")
        batch.drop_column("labour_minutes")
        batch.drop_column("skill")

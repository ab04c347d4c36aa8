"""closed times are closures: a `closures` table whose rows claim slots like bookings do

Staff closing a slot used to book it for a placeholder customer ("Closed by staff" at the
closed-slot@ address), which every mail path, the staff grid and the booking rules had to
recognise. A closure is now its own row, and it claims its slots in `booking_slots`, the claim
space of bookings: each claim is a booking's or a closure's (a CHECK says exactly one), and the
partial unique index on active claims decides between a closure and a booking on both
databases. `booking_slots` therefore gets a surrogate `id` (a primary key cannot have a NULL
column) and a nullable `booking_id`; the old primary key becomes a unique index.

Existing placeholder closures become closures: confirmed ones hold their claims, cancelled ones
(reopened by staff) are kept as reopened closures. Their booking rows, jobs, customer and
vehicle rows go. They are found by the name and the address's local part: the address's domain
follows MAIL_FROM, which may have changed since they were made, and the public could use
neither (issue 18).

Revision ID: 0011_closures_claim_slots
Revises: 0010_staff_session_version
Create Date: 2026-12-02 02:00:00
"""

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0011_closures_claim_slots"
down_revision: str | None = "0010_staff_session_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
ACTIVE = sa.text("active")
ONE_OWNER = "(booking_id IS NULL) <> (closure_id IS NULL)"
PLACEHOLDER = "customer_name = 'Closed by staff' AND customer_email LIKE 'closed-slot@%'"


def upgrade() -> None:
    op.create_table(
        "closures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("bay_id", sa.Integer, sa.ForeignKey("bays.id"), nullable=False),
        sa.Column("starts_at", TIMESTAMP, nullable=False),
        sa.Column("ends_at", TIMESTAMP, nullable=False),
        sa.Column("reason", sa.String(200)),
        sa.Column("closed_by", sa.String(100), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("reopened_at", TIMESTAMP),
        sa.Column("reopened_by", sa.String(100)),
        sa.CheckConstraint("ends_at > starts_at", name="ck_closures_ends_after_start"),
    )
    op.create_index("ix_closures_starts_at", "closures", ["starts_at"])
    if op.get_bind().dialect.name == "postgresql":
        _claims_postgres()
    else:
        _claims_sqlite()
    op.create_index(
        "uq_booking_slots_booking_id_slot_id",
        "booking_slots",
        ["booking_id", "slot_id"],
        unique=True,
    )
    op.create_index(
        "uq_booking_slots_closure_id_slot_id",
        "booking_slots",
        ["closure_id", "slot_id"],
        unique=True,
    )
    _placeholders_to_closures()


def _claims_postgres() -> None:
    """In place: existing claims keep their rows (and the index on active claims stays)."""
    for statement in (
        "ALTER TABLE booking_slots ADD COLUMN id SERIAL",
        "ALTER TABLE booking_slots DROP CONSTRAINT booking_slots_pkey",
        "ALTER TABLE booking_slots ADD CONSTRAINT booking_slots_pkey PRIMARY KEY (id)",
        "ALTER TABLE booking_slots ALTER COLUMN booking_id DROP NOT NULL",
        "ALTER TABLE booking_slots ADD COLUMN closure_id integer REFERENCES closures (id)",
        f"ALTER TABLE booking_slots ADD CONSTRAINT ck_booking_slots_one_owner CHECK ({ONE_OWNER})",
    ):
        op.execute(statement)


def _claims_sqlite() -> None:
    """SQLite cannot change a primary key: the table is built anew and the claims copied."""
    op.drop_index("uq_booking_slots_slot_id_active", table_name="booking_slots")
    op.rename_table("booking_slots", "booking_slots_old")
    _create_claims_table()
    op.execute(
        "INSERT INTO booking_slots (booking_id, slot_id, active) "
        "SELECT booking_id, slot_id, active FROM booking_slots_old"
    )
    op.drop_table("booking_slots_old")
    _active_claims_index()


def _create_claims_table() -> None:
    op.create_table(
        "booking_slots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("booking_id", sa.String(32), sa.ForeignKey("bookings.id")),
        sa.Column("closure_id", sa.Integer, sa.ForeignKey("closures.id")),
        sa.Column("slot_id", sa.Integer, sa.ForeignKey("slots.id"), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.CheckConstraint(ONE_OWNER, name="ck_booking_slots_one_owner"),
    )


def _active_claims_index() -> None:
    op.create_index(
        "uq_booking_slots_slot_id_active",
        "booking_slots",
        ["slot_id"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def _placeholders_to_closures() -> None:
    bind = op.get_bind()
    found = bind.execute(
        sa.text(f"SELECT id, reference FROM bookings WHERE {PLACEHOLDER}")  # noqa: S608 (constant)
    ).all()
    for booking_id, reference in found:
        closure_id = bind.execute(
            sa.text(
                "INSERT INTO closures (bay_id, starts_at, ends_at, reason, closed_by, created_at,"
                " reopened_at, reopened_by)"
                " SELECT s.bay_id, b.starts_at, b.ends_at, NULL,"
                " CASE WHEN b.notes LIKE 'Closed by %' THEN substr(b.notes, 11) ELSE 'staff' END,"
                " b.created_at,"
                " CASE WHEN b.status = 'cancelled' THEN coalesce(b.cancelled_at, b.created_at) END,"
                " CASE WHEN b.status = 'cancelled' THEN 'staff' END"
                " FROM bookings b JOIN slots s ON s.id = b.slot_id WHERE b.id = :id"
                " RETURNING id"
            ),
            {"id": booking_id},
        ).scalar_one()
        bind.execute(
            sa.text(
                "UPDATE booking_slots SET closure_id = :closure, booking_id = NULL"
                " WHERE booking_id = :id"
            ),
            {"closure": closure_id, "id": booking_id},
        )
        _forget_booking(booking_id, reference)
    # The placeholder customer and car, unless something else still names them.
    bind.execute(
        sa.text(
            "DELETE FROM customers WHERE email LIKE 'closed-slot@%' AND NOT EXISTS"
            " (SELECT 1 FROM bookings b WHERE b.customer_email = customers.email)"
        )
    )
    bind.execute(
        sa.text(
            "DELETE FROM vehicles WHERE registration = 'CLOSED' AND NOT EXISTS"
            " (SELECT 1 FROM bookings b WHERE b.vehicle_registration = vehicles.registration)"
        )
    )


def _forget_booking(booking_id: str, reference: str) -> None:
    """Its jobs (skipped or pending mails to nobody) and its row. A job's payload is JSON
    naming the booking; the LIKE only narrows, the parsed payload decides."""
    bind = op.get_bind()
    jobs = bind.execute(
        sa.text("SELECT id, payload FROM outbox WHERE payload LIKE :pattern"),
        {"pattern": f"%{reference}%"},
    ).all()
    for job_id, payload in jobs:
        if orjson.loads(payload).get("booking_id") == booking_id:
            bind.execute(sa.text("DELETE FROM outbox WHERE id = :id"), {"id": job_id})
    bind.execute(sa.text("DELETE FROM idempotency_keys WHERE booking_id = :id"), {"id": booking_id})
    bind.execute(sa.text("DELETE FROM bookings WHERE id = :id"), {"id": booking_id})


def downgrade() -> None:
    """Back to claims of bookings only. Closures cannot be bookings again without a customer:
    they and their claims are dropped (the times they closed become free)."""
    op.execute("DELETE FROM booking_slots WHERE closure_id IS NOT NULL")
    op.drop_index("uq_booking_slots_closure_id_slot_id", table_name="booking_slots")
    op.drop_index("uq_booking_slots_booking_id_slot_id", table_name="booking_slots")
    if op.get_bind().dialect.name == "postgresql":
        for statement in (
            "ALTER TABLE booking_slots DROP CONSTRAINT ck_booking_slots_one_owner",
            "ALTER TABLE booking_slots DROP COLUMN closure_id",
            "ALTER TABLE booking_slots ALTER COLUMN booking_id SET NOT NULL",
            "ALTER TABLE booking_slots DROP CONSTRAINT booking_slots_pkey",
            "ALTER TABLE booking_slots ADD CONSTRAINT booking_slots_pkey"
            " PRIMARY KEY (booking_id, slot_id)",
            "ALTER TABLE booking_slots DROP COLUMN id",
        ):
            op.execute(statement)
    else:
        op.drop_index("uq_booking_slots_slot_id_active", table_name="booking_slots")
        op.rename_table("booking_slots", "booking_slots_new")
        op.create_table(
            "booking_slots",
            sa.Column("booking_id", sa.String(32), sa.ForeignKey("bookings.id"), primary_key=True),
            sa.Column("slot_id", sa.Integer, sa.ForeignKey("slots.id"), primary_key=True),
            sa.Column("active", sa.Boolean, nullable=False),
        )
        op.execute(
            "INSERT INTO booking_slots (booking_id, slot_id, active) "
            "SELECT booking_id, slot_id, active FROM booking_slots_new"
        )
        op.drop_table("booking_slots_new")
        _active_claims_index()
    op.drop_index("ix_closures_starts_at", table_name="closures")
    op.drop_table("closures")

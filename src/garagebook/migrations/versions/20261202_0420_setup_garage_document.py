"""the garage's own setup document: stored, reflected into services, bays and slots

`garage` holds the one document (JSON) with its version, and the two values the booking
statement reads at booking time (`slot_minutes`, `min_notice_minutes`), so no process has to
trust a cached copy; `garage_changes` records every change (who, when, what, as lines).
Services gain a stable `key`, a description, the bay capability they `need` and `active`
(retired, never deleted); bays gain `capabilities` (comma-separated) and `active`; a slot is
`open` while the document offers it (inside the hours, on an active bay, not a closed day);
a booking keeps the `price_pence` it was booked at.

Revision ID: 0011_setup_garage_document
Revises: 0010_staff_session_version
Create Date: 2026-12-02 04:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_setup_garage_document"
down_revision: str | None = "0010_staff_session_version"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "garage",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slot_minutes", sa.Integer, nullable=False),
        sa.Column("min_notice_minutes", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_garage_one_row"),
    )
    op.create_table(
        "garage_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("lines", sa.Text, nullable=False),
    )
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("key", sa.String(40)))
        batch.add_column(sa.Column("description", sa.Text, nullable=False, server_default=""))
        batch.add_column(
            sa.Column("needs", sa.String(40), nullable=False, server_default="general")
        )
        batch.add_column(sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()))
    # Existing services get a key from their name ("Oil change" → "oil-change").
    op.execute("UPDATE services SET key = lower(replace(name, ' ', '-'))")
    with op.batch_alter_table("services") as batch:
        batch.alter_column("key", existing_type=sa.String(40), nullable=False)
        batch.create_unique_constraint("uq_services_key", ["key"])
    with op.batch_alter_table("bays") as batch:
        batch.add_column(
            sa.Column("capabilities", sa.Text, nullable=False, server_default="general")
        )
        batch.add_column(sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()))
    with op.batch_alter_table("slots") as batch:
        batch.add_column(sa.Column("open", sa.Boolean, nullable=False, server_default=sa.true()))
    with op.batch_alter_table("bookings") as batch:
        batch.add_column(sa.Column("price_pence", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("bookings") as batch:
        batch.drop_column("price_pence")
    with op.batch_alter_table("slots") as batch:
        batch.drop_column("open")
    with op.batch_alter_table("bays") as batch:
        batch.drop_column("active")
        batch.drop_column("capabilities")
    with op.batch_alter_table("services") as batch:
        batch.drop_constraint("uq_services_key", type_="unique")
        batch.drop_column("active")
        batch.drop_column("needs")
        batch.drop_column("description")
        batch.drop_column("key")
    op.drop_table("garage_changes")
    op.drop_table("garage")

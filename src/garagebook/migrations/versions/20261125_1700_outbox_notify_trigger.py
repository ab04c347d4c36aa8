"""outbox notify trigger: wake `garagebook worker` processes the moment a job is committed

PostgreSQL only: an `AFTER INSERT` trigger on `outbox` calls `pg_notify('garagebook_outbox',
'')`, so workers blocked in `LISTEN` claim a new job within milliseconds of its commit, while
the booking path sends no extra statement. NOTIFY is delivered at commit (never for a
rolled-back booking), and identical notifications of one transaction are delivered once.
SQLite has no NOTIFY: its worker polls.

Both databases get `outbox.locked_by`: which worker holds (or last held) a job's lease, so a
worker only finishes the claim it made, and operators can see who holds what.

Revision ID: 0003_outbox_notify
Revises: 0002_slot_unique
Create Date: 2026-11-25 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_outbox_notify"
down_revision: str | None = "0002_slot_unique"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "garagebook_outbox"  # garagebook.jobs.worker.NOTIFY_CHANNEL


def upgrade() -> None:
    op.add_column("outbox", sa.Column("locked_by", sa.String(64)))
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION garagebook_outbox_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END
        $$
        """
    )
    # Per row, so an insert of no rows (a conditional insert in a larger statement) wakes no
    # one; PostgreSQL folds a transaction's identical notifications into one anyway.
    op.execute(
        """
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH ROW EXECUTE FUNCTION garagebook_outbox_notify()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
        op.execute("DROP FUNCTION IF EXISTS garagebook_outbox_notify()")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("locked_by")

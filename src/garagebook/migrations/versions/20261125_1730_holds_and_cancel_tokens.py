"""cancel tokens: each booking's unguessable manage/cancel token, stored hashed

Revision ID: 0004_holds_and_cancel_tokens
Revises: 0003_outbox_notify
Create Date: 2026-11-25 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_holds_and_cancel_tokens"
down_revision: str | None = "0003_outbox_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Holds live in the reservation layer only (Redis keys with a TTL): no table.
    # A plain ADD COLUMN and a unique index: no table rebuild on SQLite, which would have to
    # carry the partial unique indexes across.
    op.add_column("bookings", sa.Column("cancel_token_hash", sa.String(64)))
    op.create_index("uq_bookings_cancel_token_hash", "bookings", ["cancel_token_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_bookings_cancel_token_hash", table_name="bookings")
    op.drop_column("bookings", "cancel_token_hash")

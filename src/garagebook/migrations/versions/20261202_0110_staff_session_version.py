"""staff sessions can be ended: a session version per staff user

A staff session cookie is signed and carries the version it was issued at; every staff request
compares it with this column. Sign-out and a password change add one, so every cookie issued
before stops working; removing the user removes the row, so their cookies match nothing.

Revision ID: 0010_staff_session_version
Revises: 0009_idempotency_seal_caps
Create Date: 2026-12-02 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_staff_session_version"
down_revision: str | None = "0009_idempotency_seal_caps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.add_column(
            sa.Column("session_version", sa.Integer, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_column("session_version")

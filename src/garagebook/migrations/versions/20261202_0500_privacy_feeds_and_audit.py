"""calendar feeds, and the audit of a customer's data exported or erased

`calendar_feeds`: a feed's token is the only key to it, so only its SHA-256 is stored; a feed
covers the whole garage (`bay_id` NULL) or one bay; revoking sets `revoked_at` (the row stays,
so the staff page can say who made it and when it ended).

`personal_data_audit`: who exported or erased whose data, and when. "Whose" is the SHA-256 of
the lower-cased e-mail address: an erased address must not stay behind in its own audit.

Revision ID: 0011_privacy_feeds_and_audit
Revises: 0011_owner_staff_roles (0010_staff_session_version before wt-owner was merged)
Create Date: 2026-12-02 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_privacy_feeds_and_audit"
down_revision: str | None = "0011_owner_staff_roles"  # was 0010: chained after merging wt-owner
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calendar_feeds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("bay_id", sa.Integer, sa.ForeignKey("bays.id")),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("uq_calendar_feeds_token_hash", "calendar_feeds", ["token_hash"], unique=True)
    op.create_table(
        "personal_data_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),  # export, erase, retention
        sa.Column("subject_hash", sa.String(64)),  # NULL for a retention run (many people)
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_personal_data_audit_at", "personal_data_audit", ["at"])


def downgrade() -> None:
    op.drop_index("ix_personal_data_audit_at", "personal_data_audit")
    op.drop_table("personal_data_audit")
    op.drop_index("uq_calendar_feeds_token_hash", "calendar_feeds")
    op.drop_table("calendar_feeds")

"""staff roles: an owner may change the garage's settings and the staff accounts, staff may not

Every account that exists before this migration becomes an owner: until now every staff user
could do everything, so nobody loses anything they could do. Accounts made afterwards are
`staff` unless made as owners (`garagebook staff add NAME --role owner`; the first account of a
new install is an owner), so the database default is the smaller role.

Revision ID: 0011_owner_staff_roles
Revises: 0011_setup_garage_document (chained after wt-setup's migration in this branch;
on main its parent is 0010_staff_session_version)
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_owner_staff_roles"
down_revision: str | None = "0011_setup_garage_document"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.add_column(sa.Column("role", sa.String(10), nullable=False, server_default="staff"))
        batch.create_check_constraint("ck_staff_users_role", "role IN ('owner', 'staff')")
    op.execute("UPDATE staff_users SET role = 'owner'")


def downgrade() -> None:
    with op.batch_alter_table("staff_users") as batch:
        batch.drop_constraint("ck_staff_users_role", type_="check")
        batch.drop_column("role")

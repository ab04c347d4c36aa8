"""Staff accounts and their roles: the rules the accounts page and `garagebook staff` share.

The garage always keeps an owner — somebody must be able to change its settings and its
accounts — so demoting or removing the last owner is refused (`LastOwner`). That is decided
while the owners' rows are locked (`FOR UPDATE` on PostgreSQL; SQLite's writers queue at
BEGIN IMMEDIATE), so two owners demoting each other at once cannot leave none. A role change
or a removal ends that account's sessions: its session version moves on, or its row is gone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.db import insert_ignoring_conflicts
from garagebook.errors import InvalidRequest, LastOwner, StaffNameTaken, StaffUserNotFound
from garagebook.schema import staff_users
from garagebook.web.auth import OWNER, Role, as_role, hash_password

MIN_PASSWORD_LENGTH = 10
MAX_NAME_LENGTH = 100


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    role: Role
    created_at: datetime


def checked_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"The name must be 1 to {MAX_NAME_LENGTH} characters.")
    return name


def checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(f"The password must be at least {MIN_PASSWORD_LENGTH} characters.")
    return password


async def list_accounts(conn: AsyncConnection) -> list[Account]:
    rows = await conn.execute(
        select(
            staff_users.c.id, staff_users.c.name, staff_users.c.role, staff_users.c.created_at
        ).order_by(staff_users.c.name)
    )
    return [Account(r.id, r.name, as_role(r.role), r.created_at) for r in rows]


async def add_account(
    conn: AsyncConnection, name: str, password: str, role: Role, now: datetime
) -> int:
    """A new account; `StaffNameTaken` when the name is in use (the page never changes an
    existing account's password by adding it again, unlike `garagebook staff add`)."""
    created = await conn.scalar(
        insert_ignoring_conflicts(conn, staff_users)
        .values(
            name=checked_name(name),
            password_hash=hash_password(checked_password(password)),
            created_at=now,
            updated_at=now,
            role=role,
        )
        .returning(staff_users.c.id)
    )
    if created is None:
        raise StaffNameTaken()
    return int(created)


async def _locked_owners(conn: AsyncConnection) -> set[int]:
    """The owners' ids, their rows locked until this transaction ends."""
    rows = await conn.execute(
        select(staff_users.c.id).where(staff_users.c.role == OWNER).with_for_update()
    )
    return {row.id for row in rows}


async def _refuse_losing_the_last_owner(conn: AsyncConnection, user_id: int) -> None:
    owners = await _locked_owners(conn)
    if owners == {user_id}:
        raise LastOwner()


async def change_role(conn: AsyncConnection, user_id: int, role: Role, now: datetime) -> None:
    """Give an account a role; its sessions end (it signs in again with the new role)."""
    if role != OWNER:
        await _refuse_losing_the_last_owner(conn, user_id)
    changed = await conn.execute(
        update(staff_users)
        .where(staff_users.c.id == user_id)
        .values(role=role, updated_at=now, session_version=staff_users.c.session_version + 1)
    )
    if changed.rowcount == 0:
        raise StaffUserNotFound()


async def remove_account(conn: AsyncConnection, user_id: int) -> None:
    """Remove an account: its session cookies match no row any more."""
    await _refuse_losing_the_last_owner(conn, user_id)
    removed = await conn.execute(delete(staff_users).where(staff_users.c.id == user_id))
    if removed.rowcount == 0:
        raise StaffUserNotFound()


async def account_id(conn: AsyncConnection, name: str) -> int:
    found = await conn.scalar(select(staff_users.c.id).where(staff_users.c.name == name))
    if found is None:
        raise StaffUserNotFound()
    return int(found)

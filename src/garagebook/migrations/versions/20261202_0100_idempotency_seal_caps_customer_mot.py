"""idempotency records without plaintext keys or tokens; booking caps; a customer's MOT date

- `idempotency_keys.key` becomes the key's SHA-256, the manage token leaves `response_body`
  and is kept in `token_sealed`, sealed with the key itself (bookings/idempotency.py, inlined
  below so this migration never changes with the code); records older than 24 hours are
  deleted; an index on `created_at` for the worker's pruning.
- `garagebook_booking_cap(...)` (PostgreSQL): called by the one booking statement
  (bookings/sql.py). It takes transaction-scoped advisory locks on the customer's e-mail and
  the car's registration, then counts live bookings; being VOLATILE, each of its queries gets a
  fresh snapshot, so it sees every booking committed by whoever held those locks before. That
  is what makes the caps hold under concurrent requests inside a single statement.
- `bookings.mot_expires_on` / `mot_reminded_for`: the MOT expiry a customer gave through their
  manage link is kept on their booking, not on the car's record.

Revision ID: 0009_idempotency_seal_caps
Revises: 0008_completed_status
Create Date: 2026-12-02 01:00:00
"""

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0009_idempotency_seal_caps"
down_revision: str | None = "0008_completed_status"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Two-key advisory locks (classid, objid): a key space of their own, apart from the waitlist's
# one-key lock. Every booking takes the e-mail's lock first, then the registration's, so two
# bookings can never wait for each other's second lock.
CAP_FUNCTION = """
CREATE OR REPLACE FUNCTION garagebook_booking_cap(
    p_email varchar, p_registration varchar, p_day_start timestamptz, p_day_end timestamptz,
    p_now timestamptz, p_max_email integer, p_max_registration integer, p_max_day integer
) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    live integer;
BEGIN
    IF p_max_email IS NULL THEN
        RETURN NULL;  -- not capped (staff)
    END IF;
    PERFORM pg_advisory_xact_lock(1734500001, hashtext(p_email));
    PERFORM pg_advisory_xact_lock(1734500002, hashtext(p_registration));
    IF p_max_email > 0 THEN
        SELECT count(*) INTO live FROM bookings
        WHERE customer_email = p_email AND status = 'confirmed' AND ends_at > p_now;
        IF live >= p_max_email THEN
            RETURN 'email';
        END IF;
    END IF;
    IF p_max_registration > 0 THEN
        SELECT count(*) INTO live FROM bookings
        WHERE vehicle_registration = p_registration AND status = 'confirmed'
          AND ends_at > p_now;
        IF live >= p_max_registration THEN
            RETURN 'registration';
        END IF;
    END IF;
    IF p_max_day > 0 THEN
        SELECT count(*) INTO live FROM bookings
        WHERE customer_email = p_email AND status = 'confirmed'
          AND starts_at >= p_day_start AND starts_at < p_day_end;
        IF live >= p_max_day THEN
            RETURN 'email_day';
        END IF;
    END IF;
    RETURN NULL;
END
$$
"""

_LABEL = b"garagebook idempotency: manage token"


def _seal(token: str, key: str) -> str:
    salt = secrets.token_bytes(16)
    data = token.encode()
    stream = b"".join(
        hmac.new(key.encode(), _LABEL + salt + n.to_bytes(4, "big"), hashlib.sha256).digest()
        for n in range((len(data) + 31) // 32)
    )
    sealed = bytes(a ^ b for a, b in zip(data, stream[: len(data)], strict=True))
    return base64.urlsafe_b64encode(salt + sealed).decode()


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("token_sealed", sa.Text()))
        batch.create_index("ix_idempotency_keys_created_at", ["created_at"])
    with op.batch_alter_table("bookings") as batch:
        batch.add_column(sa.Column("mot_expires_on", sa.Date()))
        batch.add_column(sa.Column("mot_reminded_for", sa.Date()))

    conn = op.get_bind()
    records = sa.table(
        "idempotency_keys",
        sa.column("key", sa.String),
        sa.column("response_body", sa.Text),
        sa.column("token_sealed", sa.Text),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    # SQLite keeps the app's UTC datetimes naive: compare in the form the column holds.
    cutoff = datetime.now(UTC) - timedelta(hours=24)
    if conn.dialect.name == "sqlite":
        cutoff = cutoff.replace(tzinfo=None)
    conn.execute(records.delete().where(records.c.created_at < cutoff))
    for key, body in conn.execute(sa.select(records.c.key, records.c.response_body)).all():
        answer = json.loads(body)
        token = answer.pop("cancel_token", None)
        conn.execute(
            records.update()
            .where(records.c.key == key)
            .values(
                key=hashlib.sha256(key.encode()).hexdigest(),
                response_body=json.dumps(answer),
                token_sealed=_seal(token, key) if isinstance(token, str) else None,
            )
        )
    if conn.dialect.name == "postgresql":
        op.execute(CAP_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS garagebook_booking_cap("
            "varchar, varchar, timestamptz, timestamptz, timestamptz, integer, integer, integer)"
        )
    with op.batch_alter_table("bookings") as batch:
        batch.drop_column("mot_reminded_for")
        batch.drop_column("mot_expires_on")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_index("ix_idempotency_keys_created_at")
        batch.drop_column("token_sealed")
    # Hashed keys cannot be turned back: the old code would not find them, so they go.
    op.execute("DELETE FROM idempotency_keys")

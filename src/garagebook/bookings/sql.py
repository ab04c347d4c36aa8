"""The booking write on PostgreSQL as one statement: one round trip inside the transaction
instead of five. (SQLite has no data-modifying CTEs: it runs the same inserts one by one,
in service.py, in-process and so cheap.) `make bench` runs this very text under pgbench.

The booking row goes first, against uq_bookings_slot_id_not_cancelled; everything else is
written only if it went in (`FROM booking`), including the outbox rows: the confirmation,
due now, and the reminder, due at :reminder_at (NULL: none). The claims go against
uq_booking_slots_slot_id_active. Every insert that can lose a race says ON CONFLICT DO
NOTHING, so losing is a count, not an exception: the caller compares `claimed` with the number
of slots and `keyed` with whether it sent a key, and rolls back when they differ.

The setup document's rules are read here too, never trusted from a cache (`rules`, see
garage/rules.py): the booking goes in only while its service is active with the minutes the
plan was made with, on a bay that `can` what it needs, and (online) not sooner than the
minimum notice; the claims take only open slots, locked FOR SHARE so an apply closing one
waits for this booking (and then lists it as outside the hours) or wins and makes it a 409.
The booking keeps the service's price as booked. A plan made under another version of the
setup (which may list other technicians) is refused the same way (StalePlan).

The technician (issue 15, technicians/claims.py): with `:technician_id` given, it must be
active with the service's skill (`technician`); its open slots at `:starts` are claimed FOR
SHARE against uq_technician_claims_technician_slot_id_active (`technician_claimed`), and the
booking's minutes are added to its `:day` only while it is not absent and stays within the
minutes it works (`technician_day`: `:technician_minutes`, which the booking records). The
caller compares both counts and rolls back (TechnicianTaken) when either falls short; with no
technician, both are 0 and not asked. A drop-off (technicians/drop_offs.py) is this same
statement with no slot (`:slot_id` NULL, no bay to check, nothing to claim): only the
technician's day decides it.

The caps on live bookings per e-mail, registration and day come first (`cap`): the function
of migration 0009 serialises one customer's and one car's bookings with advisory locks and
counts with a fresh snapshot; `refused` names the cap reached, and then nothing is written.
Staff bookings pass NULL caps: no lock, no count. A public booking fills in a car's make and
model only where the record has none; a staff booking's values replace them.
The Idempotency-Key record replaces an expired one with the same key, never a live one.
The outbox insert is `jobs.queue.enqueue`'s, inlined for the one round trip: built from the
same column list (`NEW_JOB_COLUMNS`), kinds (`jobs.kinds`) and initial state, so the two
cannot drift apart (tests/test_outbox.py compares the rows they write).
The `booking.created` webhook jobs (`hooks`) are webhooks/events.py's insert, inlined the same
way: one outbox row per enabled subscription, no extra round trip. Its cost is a scan of the
tiny `webhooks` table per booking, plus one outbox row (and its NOTIFY trigger) per receiver.
"""

from __future__ import annotations

from garagebook.jobs.kinds import BOOKING_CONFIRMED, BOOKING_REMINDER
from garagebook.jobs.queue import NEW_JOB_COLUMNS, PENDING
from garagebook.webhooks.events import POSTGRES_CTE as WEBHOOK_JOBS

# What each column of a new job is in the statement below, in NEW_JOB_COLUMNS' order.
JOB_VALUES = {
    "kind": "due.kind",
    "payload": "CAST(:payload AS text)",
    "status": f"'{PENDING}'",
    "attempts": "0",
    "run_at": "due.run_at",
    "created_at": "CAST(:created_at AS timestamptz)",
}
_JOB_COLUMNS = ", ".join(NEW_JOB_COLUMNS)
_JOB_SELECT = ", ".join(JOB_VALUES[column] for column in NEW_JOB_COLUMNS)

# Only constants are formatted into it: every value is a bound parameter.
BOOK_POSTGRES = f"""
WITH cap AS (
    SELECT garagebook_booking_cap(
        CAST(:email AS varchar), CAST(:registration AS varchar),
        CAST(:day_start AS timestamptz), CAST(:day_end AS timestamptz),
        CAST(:created_at AS timestamptz), CAST(:max_email AS integer),
        CAST(:max_registration AS integer), CAST(:max_day AS integer)
    ) AS refused
), rules AS (
    SELECT (SELECT duration_minutes FROM services
            WHERE id = CAST(:service_id AS integer) AND active) AS minutes,
           CAST(:slot_id AS integer) IS NULL /* a drop-off: no bay */
           OR coalesce((SELECT position(',' || sv.needs || ',' IN ',' || b.capabilities || ',') > 0
                        FROM slots sl JOIN bays b ON b.id = sl.bay_id AND b.active,
                             services sv
                        WHERE sl.id = CAST(:slot_id AS integer)
                          AND sv.id = CAST(:service_id AS integer)), FALSE) AS bay_can,
           coalesce((SELECT min_notice_minutes FROM garage WHERE id = 1), 0) AS notice,
           (SELECT version FROM garage WHERE id = 1) AS version
), booking AS (
    INSERT INTO bookings (id, reference, slot_id, service_id, customer_email, customer_name,
                          customer_phone, vehicle_registration, vehicle_make, vehicle_model,
                          notes, status, starts_at, ends_at, created_at, cancel_token_hash,
                          price_pence, technician_id, technician_minutes)
    SELECT CAST(:id AS varchar), CAST(:reference AS varchar), CAST(:slot_id AS integer),
           CAST(:service_id AS integer), CAST(:email AS varchar), CAST(:name AS varchar),
           CAST(:phone AS varchar), CAST(:registration AS varchar), CAST(:make AS varchar),
           CAST(:model AS varchar), CAST(:notes AS text), 'confirmed',
           CAST(:starts_at AS timestamptz), CAST(:ends_at AS timestamptz),
           CAST(:created_at AS timestamptz), CAST(:cancel_token_hash AS varchar),
           (SELECT price_pence FROM services WHERE id = CAST(:service_id AS integer)),
           CAST(:technician_id AS integer),
           CASE WHEN CAST(:technician_id AS integer) IS NOT NULL
                THEN CAST(:technician_minutes AS integer) END
    FROM cap, rules
    WHERE cap.refused IS NULL
      AND rules.minutes = CAST(:minutes AS integer) AND rules.bay_can
      AND rules.version IS NOT DISTINCT FROM CAST(:garage_version AS integer)
      AND (CAST(:staff AS boolean) OR CAST(:starts_at AS timestamptz)
           >= CAST(:created_at AS timestamptz) + rules.notice * interval '1 minute')
    ON CONFLICT DO NOTHING
    RETURNING id
), claims AS (
    INSERT INTO booking_slots (booking_id, slot_id, active)
    SELECT booking.id, claimed.id, TRUE
    FROM booking CROSS JOIN (
        SELECT id FROM slots WHERE id = ANY(CAST(:slot_ids AS integer[])) AND open FOR SHARE
    ) AS claimed
    ON CONFLICT DO NOTHING
    RETURNING slot_id
), technician AS (
    SELECT t.id FROM technicians t, services sv
    WHERE t.id = CAST(:technician_id AS integer) AND t.active
      AND sv.id = CAST(:service_id AS integer)
      AND position(',' || sv.skill || ',' IN ',' || t.skills || ',') > 0
), technician_claimed AS (
    INSERT INTO technician_claims (booking_id, technician_slot_id, active)
    SELECT booking.id, taken.id, TRUE
    FROM booking CROSS JOIN (
        SELECT ts.id FROM technician_slots ts JOIN technician ON technician.id = ts.technician_id
        WHERE ts.starts_at = ANY(CAST(:starts AS timestamptz[])) AND ts.open FOR SHARE OF ts
    ) AS taken
    ON CONFLICT DO NOTHING
    RETURNING technician_slot_id
), technician_day AS (
    UPDATE technician_days d
    SET minutes_booked = d.minutes_booked + CAST(:technician_minutes AS integer)
    FROM booking, technician
    WHERE d.technician_id = technician.id AND d.day = CAST(:day AS date) AND NOT d.absent
      AND d.minutes_booked + CAST(:technician_minutes AS integer) <= d.minutes_working
    RETURNING d.technician_id
), customer AS (
    INSERT INTO customers (email, name, phone, updated_at)
    SELECT CAST(:email AS varchar), CAST(:name AS varchar), CAST(:phone AS varchar),
           CAST(:created_at AS timestamptz)
    FROM booking
    ON CONFLICT (email) DO UPDATE
        SET name = excluded.name, phone = excluded.phone, updated_at = excluded.updated_at
), vehicle AS (
    INSERT INTO vehicles (registration, make, model, updated_at)
    SELECT CAST(:registration AS varchar), CAST(:make AS varchar), CAST(:model AS varchar),
           CAST(:created_at AS timestamptz)
    FROM booking
    ON CONFLICT (registration) DO UPDATE
        SET make = CASE WHEN CAST(:staff AS boolean) THEN coalesce(excluded.make, vehicles.make)
                        ELSE coalesce(vehicles.make, excluded.make) END,
            model = CASE WHEN CAST(:staff AS boolean)
                         THEN coalesce(excluded.model, vehicles.model)
                         ELSE coalesce(vehicles.model, excluded.model) END,
            updated_at = excluded.updated_at
), jobs AS (
    INSERT INTO outbox ({_JOB_COLUMNS})
    SELECT {_JOB_SELECT}
    FROM booking CROSS JOIN (VALUES
        ('{BOOKING_CONFIRMED}', CAST(:created_at AS timestamptz)),
        ('{BOOKING_REMINDER}', CAST(:reminder_at AS timestamptz))
    ) AS due (kind, run_at)
    WHERE due.run_at IS NOT NULL
), hooks AS ({WEBHOOK_JOBS}), idempotency AS (
    INSERT INTO idempotency_keys (key, request_hash, booking_id, response_body, created_at,
                                  token_sealed)
    SELECT CAST(:idempotency_key AS varchar), CAST(:request_hash AS varchar), booking.id,
           CAST(:response_body AS text), CAST(:created_at AS timestamptz),
           CAST(:token_sealed AS text)
    FROM booking
    WHERE CAST(:idempotency_key AS varchar) IS NOT NULL
    ON CONFLICT (key) DO UPDATE
        SET request_hash = excluded.request_hash, booking_id = excluded.booking_id,
            response_body = excluded.response_body, created_at = excluded.created_at,
            token_sealed = excluded.token_sealed
        WHERE idempotency_keys.created_at < CAST(:expired_before AS timestamptz)
    RETURNING key
)
SELECT (SELECT refused FROM cap) AS refused,
       (SELECT count(*) FROM booking) AS booked,
       (SELECT count(*) FROM claims) AS claimed,
       (SELECT count(*) FROM technician_claimed) AS technician_claimed,
       (SELECT count(*) FROM technician_day) AS technician_counted,
       (SELECT count(*) FROM idempotency) AS keyed,
       (SELECT minutes FROM rules) AS minutes, (SELECT bay_can FROM rules) AS bay_can,
       (SELECT notice FROM rules) AS notice, (SELECT version FROM rules) AS version
"""  # noqa: S608 (constants only, see above)

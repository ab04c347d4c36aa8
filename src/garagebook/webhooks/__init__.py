"""Signed webhooks on the outbox (DESIGN.md, "Webhooks, calendar feeds, a customer's data").

- `events.py`: a booking change writes one `webhook_delivery` job per enabled subscription
  that wants the event, in the change's own transaction (the booking's PostgreSQL statement
  does it as one more CTE, bookings/sql.py).
- `delivery.py`: the job's handler: resolve and check the receiver's address (SSRF,
  `targets.py`), sign, POST with a timeout, log the attempt; the outbox retries with backoff
  and jitter and buries the job after JOB_MAX_ATTEMPTS, as for every job.
- `sealing.py`: the signing secrets, sealed in the database.
- `service.py` + `routes.py`: subscriptions, the delivery log and replays for the admin API;
  web/webhooks.py is the staff settings page over the same functions.
"""

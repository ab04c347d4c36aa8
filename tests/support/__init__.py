"""What the tests share besides fixtures (the fixtures are in the conftest.py next to this
package, and build on these modules):

- `stack`: the shared PostgreSQL and Redis, test tokens, `Stack` (one deployment shape and its
  settings or server environment), `reset_database`, `run_sync`/`in_thread`, `service_missing`;
- `processes`: `ServerProcess`, `WorkerProcess`, `RedisProcess`, `free_port`, `wait_for`, `ROOT`;
- `mail`: the SMTP sink (`SmtpSink`, `ReceivedMail`), `FAST_JOBS`, `mail_settings`,
  `mail_env`, `running_app`;
- `api`: requests many tests make (`booking_body`, `free_slots`, `book_as`, `book_slots`,
  `open_admin_slot`, …) and `wait_until`.
"""

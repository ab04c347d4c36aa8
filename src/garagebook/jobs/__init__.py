"""Background jobs: the outbox rows the booking path writes, delivered by a worker.

A job is born in the booking's (or cancellation's) transaction, so it exists exactly when the
change does. The worker claims due jobs under a lease, runs them outside any transaction,
and records the outcome; a worker that dies loses its lease and another one takes over.
Delivery is at least once; the mail's Message-ID makes a repeat the same message.

  queue.py     the outbox as a queue: claim, finish, retry, backlog (SQL only, no commits)
  worker.py    the loop that owns the transactions: claim, run, heartbeat, LISTEN/NOTIFY
  handlers.py  what each kind of job does
  messages.py  booking mails: the data they need, Jinja2 templates, headers
  mail.py      sending: SMTP (aiosmtplib) or .eml files in a drop folder
  commands.py  `garagebook worker` and `garagebook jobs`
"""

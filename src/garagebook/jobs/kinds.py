"""Every kind of job the worker knows. Each module below registers its handlers with
`jobs.handlers.handles` when imported; the worker imports this module, so a job written by
the API always finds its handler."""

from garagebook.bookings import reminders  # noqa: F401  (booking_reminder)
from garagebook.vehicles import reminders as mot_reminders  # noqa: F401  (mot_reminder)
from garagebook.waitlist import jobs as waitlist_jobs  # noqa: F401  (waitlist_*)

"""The cancellation waitlist: people waiting for a service on a day, and the freed times
offered to them one at a time (service.py), triggered by whatever frees a time (triggers.py).

Importing any part of the waitlist subscribes it to the booking core's "a time was freed"
event (`slots.events`): the booking core itself never imports the waitlist."""

from garagebook.waitlist import triggers as _triggers  # noqa: F401  (subscribes queue_match)

"""The cancellation waitlist: people waiting for a service on a day, and the freed times
offered to them one at a time (service.py), triggered by whatever frees a time (triggers.py)."""

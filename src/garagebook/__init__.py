"""garagebook: online booking for car garages, where a slot is never booked twice."""

__version__ = "0.1.0"

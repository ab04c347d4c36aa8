"""Vehicles and the MOT: a vehicle's history, its MOT expiry, completed bookings, and the MOT
reminders. A vehicle is its normalised registration (`bookings.schemas.normalise_registration`);
its row is written by the booking path, so every vehicle known here has been booked at least
once."""

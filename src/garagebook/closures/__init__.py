"""Closed times: staff closing a slot or a time on a bay, and whole closed days.

A closure is not a booking: no customer, no mail, no report counts it. It claims its slots in
the bookings' claim space (`booking_slots`), so the database decides between a closure and a
booking exactly as it decides between two bookings (`service.py` says how)."""

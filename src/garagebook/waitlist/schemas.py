"""What joining the waitlist takes: the service and day, and who to tell."""

from __future__ import annotations

from datetime import date

from garagebook.bookings.schemas import CustomerIn, Id, VehicleIn, _Strict


class WaitlistIn(_Strict):
    service_id: Id
    day: date
    customer: CustomerIn
    vehicle: VehicleIn

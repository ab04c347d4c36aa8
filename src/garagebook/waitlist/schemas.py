"""What joining the waitlist takes: the service and day, and who to tell."""

from __future__ import annotations

from garagebook.bookings.schemas import CustomerIn, VehicleIn, _Strict
from garagebook.fields import Id, IsoDate


class WaitlistIn(_Strict):
    service_id: Id
    day: IsoDate
    customer: CustomerIn
    vehicle: VehicleIn

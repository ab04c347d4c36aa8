"""The extension point for official vehicle data (DVLA's Vehicle Enquiry Service, DVSA's MOT
History API). Nothing implements it and nothing calls it: those services need registered API
keys and cannot be reached from where garagebook is built and tested, and a made-up answer
would be worse than none. So make, model and MOT expiry are what customers and staff enter.

To add a lookup: write a class with this method (an HTTP client for the DVSA MOT History API,
say), construct it from its own settings in `app.py`'s lifespan, and call it where a vehicle's
details are shown or its MOT expiry is recorded. Treat its answer as a suggestion that staff
confirm, and its failure (timeout, rate limit, unknown plate) as "no data", never as an error
of the booking path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol


@dataclass(frozen=True)
class VehicleData:
    """What an official register says about a registration; None where it says nothing."""

    registration: str
    make: str | None
    model: str | None
    mot_expires_on: date | None


class VehicleDataSource(Protocol):
    async def lookup(self, registration: str) -> VehicleData | None:
        """The register's data for a normalised registration, or None when it has none."""
        ...

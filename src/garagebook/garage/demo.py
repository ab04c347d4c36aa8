"""The demo garage is just an example document (demo-garage.toml beside this file, linked from
examples/): `make run`, `garagebook seed` and the tests apply it like any garage's own."""

from __future__ import annotations

from pathlib import Path

from garagebook.garage.document import GarageDocument, parse_toml

DEMO_GARAGE = Path(__file__).with_name("demo-garage.toml")


def demo_document(*, book_ahead_days: int | None = None) -> GarageDocument:
    """The demo document; `book_ahead_days` lengthens its calendar (tests that need room)."""
    document = parse_toml(DEMO_GARAGE.read_text(encoding="utf-8"))
    if book_ahead_days is None:
        return document
    section = document.garage.model_copy(update={"book_ahead_days": book_ahead_days})
    return document.model_copy(update={"garage": section})

"""The garage's own setup: the document, applying it, and the calendar it makes."""

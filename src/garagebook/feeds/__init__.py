"""Calendar feeds: `GET /calendar/{token}.ics` for the staff's Google, Apple or Outlook
calendars, created and revoked by staff (admin API and the staff pages)."""

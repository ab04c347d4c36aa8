"""A customer's data: export and erasure on request (admin API, staff page), the audit of
both, and the retention period the worker applies daily."""

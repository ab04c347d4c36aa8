"""`garagebook concurrency-test`: proves against any running server that one slot cannot be
booked twice, by firing N booking requests for it at the same instant."""

"""Pure decision logic: no sockets, files, clocks or I/O libraries.

Everything here takes values and returns values (the clock and randomness are passed in),
so it is tested without servers and reused by every protocol adapter.
"""

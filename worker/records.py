"""How the hot path makes the records it makes once per row or per request.

`Row`, `Request`, `Ticket`, `RateLimit`, `Answer`, `Answered` and `Outcome` are
NamedTuples: immutable, and far cheaper to make than frozen dataclasses. Called as
`Answer(...)`, though, a NamedTuple runs the `__new__` that `collections.namedtuple`
generates in Python (it exists to take keywords and defaults): 310 ns a record on this
machine, against 130 ns for the tuple made directly, `new_record(Answer, (...))`. The
hot path makes seven a row.

The tuple must hold every field, in order, defaults included: nothing checks its
length as the generated `__new__` would. Each call site is covered by a test that
compares its record with one made by keywords (`tests/test_records.py`).
"""

from __future__ import annotations

new_record = tuple.__new__
"""`new_record(Record, (field, ...))`: a NamedTuple `Record` of exactly its fields."""

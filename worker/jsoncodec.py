"""JSON in and out of the wire and the journal: orjson where its wheels exist (a
dependency on those platforms), the standard library elsewhere, with the same results.

With orjson, `dumps` and `loads` are orjson's own functions, not wrappers of them: they
are called for every answer and every journal batch, and a Python frame around a call
that takes a microsecond would cost half as much again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

dumps: Callable[[object], bytes]
loads: Callable[[bytes | str], Any]

try:
    import orjson

    dumps, loads = orjson.dumps, orjson.loads

except ImportError:  # pragma: no cover - CPython without the wheel
    import json

    def dumps(value: object) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

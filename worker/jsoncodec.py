"""JSON in and out of the wire and the journal: orjson where its wheels exist (a
dependency on those platforms), the standard library elsewhere, with the same results."""

from __future__ import annotations

from typing import Any

try:
    import orjson

    def dumps(value: object) -> bytes:
        return orjson.dumps(value)

    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - CPython without the wheel
    import json

    def dumps(value: object) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(data: bytes | str) -> Any:
        return json.loads(data)

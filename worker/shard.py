"""`--shard K/N`: split one input across N processes that never send the same row twice.

Each row belongs to the shard picked by a stable hash of its key, so the N shards are
disjoint and together cover the input, whatever machine, Python version or hash seed
runs them; `hash()` is salted per process and so could not be used. Because the key
decides, repeats of a row land in the same shard and are de-duplicated there.

Invalid rows have no key; each is owned by the shard picked by its source and line, so it
is reported once across all shards. The source must be named the same way on every
machine (the same input argument) for that to hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from hashlib import blake2b

from worker.rows import InvalidRow, Row, RowKey

_SHAPE = re.compile(r"(\d+)/(\d+)", re.ASCII)
_SEPARATOR = "\x1f"
"""ASCII unit separator between the parts of a key. Only stability matters: two keys that
happened to encode alike would merely share a shard."""


def _bucket(text: str, count: int) -> int:
    # 8 bytes of BLAKE2b: fast, uniform, and the same bytes on every platform.
    digest = blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard index must be between 0 and {self.count - 1} for {self.count} shards,"
                f" not {self.index} (shards are numbered from 0)"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Read "K/N" as given to `--shard`."""
        match = _SHAPE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"--shard wants K/N with whole numbers, such as 0/4, not {text!r}")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: RowKey) -> bool:
        """Whether the row with this (playlist_id, session_id, data_source) key is ours."""
        if self.count == 1:
            return True
        playlist_id, session_id, data_source = key
        text = f"{playlist_id}{_SEPARATOR}{session_id}{_SEPARATOR}{data_source}"
        return _bucket(text, self.count) == self.index

    def owns_line(self, source: str, line: int) -> bool:
        """Whether the invalid row at this source and line is ours to report."""
        if self.count == 1:
            return True
        return _bucket(f"{source}{_SEPARATOR}{line}", self.count) == self.index

    def keeps(self, item: Row | InvalidRow) -> bool:
        """Whether this shard hands the row, or the invalid line, out: the reader's
        `owns` filter for a `--shard` run."""
        if isinstance(item, Row):
            return self.owns(item.key)
        return self.owns_line(item.source, item.line)

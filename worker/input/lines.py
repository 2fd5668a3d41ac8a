"""An input's physical lines, each bounded in length, so that no line is ever held whole
past `MAX_LINE_BYTES` however the input is broken."""

from __future__ import annotations

import io
import zlib

MAX_LINE_BYTES = 64 * 1024

_LIMIT = MAX_LINE_BYTES + 2  # room for a \r\n line ending
_SKIP_BYTES = 1 << 16
_ECHOED_BYTES = 200

HAS_NUL = "the line contains a NUL byte: the file may be damaged or not UTF-8 text"


class BadLine(Exception):
    """A line that cannot become a row; `ends_input` when nothing after it can be read."""

    def __init__(
        self, line: int, reason: str, fields: dict[str, object], *, ends_input: bool = False
    ) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason
        self.fields = fields
        self.ends_input = ends_input


def ending_length(raw: bytes) -> int:
    """The length of a line's ending (`\r\n`, `\n` or none), which the limit leaves out."""
    return 2 if raw.endswith(b"\r\n") else 1 if raw.endswith(b"\n") else 0


def raw_fields(raw: bytes) -> dict[str, object]:
    """A line that could not be split into fields, shortened for echoing."""
    return {"raw": raw[:_ECHOED_BYTES].decode("utf-8", "replace").rstrip("\r\n")}


def not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    return (
        f"is not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte "
        f"{error.start + 1}): save the file as UTF-8"
    )


class Lines:
    """The physical lines of one input, bounded in length, with their 1-based numbers.

    The stream under it can be swapped (`continue_from`): an input closed after its check
    goes on where it stopped, with its line numbers."""

    __slots__ = ("_readline", "lineno")

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self._readline = stream.readline
        self.lineno = 0

    def continue_from(self, stream: io.BufferedIOBase) -> None:
        """Reads on from `stream`, positioned where the previous one stopped."""
        self._readline = stream.readline

    def read(self) -> bytes:
        """The next line with its newline; b"" at the end. Raises `BadLine`."""
        try:
            raw = self._readline(_LIMIT)
            if raw:
                self.lineno += 1
                if len(raw) > MAX_LINE_BYTES and len(raw) - ending_length(raw) > MAX_LINE_BYTES:
                    if raw[-1] != 0x0A:
                        while (rest := self._readline(_SKIP_BYTES)) and rest[-1] != 0x0A:
                            pass
                    raise BadLine(
                        self.lineno,
                        f"the line is longer than {MAX_LINE_BYTES} bytes and was skipped: "
                        "look for a missing newline or an unclosed quote",
                        raw_fields(raw),
                    )
        except (EOFError, OSError, zlib.error) as error:
            raise BadLine(
                self.lineno + 1,
                f"the input cannot be read after line {self.lineno} ({error}): it is "
                "truncated or damaged and the rest of it was not read; copy it again",
                {},
                ends_input=True,
            ) from None
        return raw

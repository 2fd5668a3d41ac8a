"""Keys out of every string the tool prints or persists.

A server (a misconfigured proxy, say) may echo the request's headers in its error body,
and not always as they were sent: in upper or lower case, escaped inside a JSON string,
percent-encoded in a URL. `Scrubber` removes the run's keys in each of those shapes,
case-insensitively, wherever they occur. Everything that could carry server text into
a log line, the journal, the dead-letter file or the report passes through one: the
answers module scrubs each answer's error, and the logs scrub each line again.

Readers of files written by an earlier version have no keys to look for:
`mask_key_shapes` masks anything shaped like a Datadog key instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar
from urllib.parse import quote

REDACTED = "[redacted]"

KEY_SHAPE = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{32})(?![0-9a-fA-F])")
"""A Datadog API key (32 hex characters) or application key (40), standing alone."""


def mask_key_shapes(text: str) -> str:
    """`text` with anything shaped like a Datadog key replaced by REDACTED."""
    return KEY_SHAPE.sub(REDACTED, text)


LONG_SECRET_CHARS = 16
"""From this length a key is redacted wherever it occurs; a shorter one only as a whole
token, with no ASCII letter or digit just before or after it.

A key this long (a real API key has 32 hex characters, an application key 40) does not
turn up inside other text by chance, so every occurrence is the key, even one run into
other characters in a URL or a server's message. A shorter one (the sandbox takes any,
`x` say) does, inside words and paths: replacing those would mangle the fields scripts
filter on (`summar[redacted]`) and show the key by where the holes are."""

_WORD_CHAR = "[A-Za-z0-9]"


def shapes(secret: str) -> tuple[str, ...]:
    """The ways a server may write `secret` back, case aside: as sent; escaped inside a
    JSON string (`\\uXXXX` for non-ASCII or not, `/` escaped or not, or every character
    as `\\uXXXX`); and percent-encoded (`/` encoded or not, or every byte: `quote` leaves
    a hex key as it is, so a server that encodes every byte writes it only as `%66%30...`)."""
    escaped = json.dumps(secret)[1:-1]
    forms = (
        secret,
        escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        escaped.replace("/", "\\/"),
        "".join(f"\\u{ord(c):04x}" if c.isascii() else json.dumps(c)[1:-1] for c in secret),
        quote(secret, safe=""),
        quote(secret),  # urllib's default leaves `/` as it is
        quote(secret, safe="").replace("%20", "+"),
        "".join(f"%{byte:02X}" for byte in secret.encode()),
    )
    return tuple(dict.fromkeys(forms))


def _occurrence(shape: str, whole_token: bool) -> str:
    """A regular expression for where `shape` counts as the key: anywhere for a long
    key; for a short one, only with no ASCII letter or digit just before or after it.
    The check before it follows the shape, so the expression starts with the shape's
    first character and `re` can skip ahead to it."""
    key = re.escape(shape)
    if not whole_token:
        return key
    return f"{key}(?<!{_WORD_CHAR}{key})(?!{_WORD_CHAR})"


Line = TypeVar("Line", str, bytes)


class Finder(Generic[Line]):
    """A first look for the keys in a finished line (a log line, rendered): each shape
    as the renderer writes it, ASCII case folded. One `lower()` and a substring search
    per form: far cheaper than the expression, and nearly every line holds no key.

    The forms are grouped by their first character, and a group is searched only if the
    line holds that character at all (one `memchr`): a line without a backslash or a `%`,
    as nearly every row line is, pays for no escaped or percent-encoded form. A form can
    only be in a line that holds each of its characters, so this never misses one.

    The searches are the cheapest Python has (each is a row line's): `in` with the first
    character, as an integer for bytes (a bytes `in` tries its operand as an integer
    first, and pays for an exception when it is not one); `count` for a form (`find`
    parses its arguments the slow way: 1.7 times the cost)."""

    __slots__ = ("_groups",)

    def __init__(self, forms: Iterable[Line]) -> None:
        groups: dict[Line, list[Line]] = {}
        for form in dict.fromkeys(form.lower() for form in forms):
            if form:
                groups.setdefault(form[:1], []).append(form)
        self._groups: tuple[tuple[Line | int, tuple[Line, ...]], ...] = tuple(
            (first[0] if isinstance(first, bytes) else first, tuple(group))
            for first, group in groups.items()
        )

    def found(self, line: Line) -> bool:
        if not self._groups:
            return False
        folded = line.lower()
        count = folded.count
        for first, forms in self._groups:  # loops, where `any` would run a generator
            if first in folded:  # type: ignore[operator]  # an int only in bytes
                for form in forms:
                    if count(form):
                        return True
        return False


class Scrubber:
    """Removes the run's keys, in every shape a server may echo them, from any text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # An empty key would be found at every position of every line: it is no key.
        self._secrets = tuple(dict.fromkeys(secret for secret in secrets if secret))
        self._shapes = tuple(
            dict.fromkeys(shape for secret in self._secrets for shape in shapes(secret))
        )
        # The longest first: where two keys start at the same place, it covers both.
        # A short key's shapes are whole tokens; a long key's are found anywhere.
        occurrences = sorted(
            (
                (shape, len(secret) < LONG_SECRET_CHARS)
                for secret in self._secrets
                for shape in shapes(secret)
            ),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._occurrences = (
            re.compile(
                "|".join(_occurrence(shape, short) for shape, short in dict.fromkeys(occurrences)),
                re.IGNORECASE | re.ASCII,
            )
            if occurrences
            else None
        )

    def finder(self, render: Callable[[str], Iterable[Line]]) -> Finder[Line]:
        """A `Finder` for lines in which a string is written as `render` writes it."""
        return Finder(form for shape in self._shapes for form in render(shape))

    def text(self, text: str) -> str:
        """`text` with each stretch covered by occurrences of keys replaced by REDACTED.

        Each search starts one character after the last match began, not where it ended,
        so a key that overlaps another is found too and the stretch covers both: one
        replaced before the other is looked for would let the other's remainder through.
        """
        if self._occurrences is None:
            return text
        found = self._occurrences.search(text)
        if found is None:  # most strings: one search
            return text
        parts: list[str] = []
        done = 0  # how much of `text` is already in `parts`, written out or redacted
        while found is not None:
            start, end = found.span()
            if start >= done:  # else it overlaps the stretch just redacted
                parts += (text[done:start], REDACTED)
            done = max(done, end)
            found = self._occurrences.search(text, start + 1)
        parts.append(text[done:])
        return "".join(parts)

    def value(self, value: object) -> object:
        """`value` with every key replaced in its strings; other objects (an exception,
        say) as their scrubbed `str`, which is how they render. Mapping keys are the
        code's field names, never data, and stay as they are."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return self.text(str(value))

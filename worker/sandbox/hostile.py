"""What a hostile or misconfigured server does to an answer's body: echo the keys, send
far more than any answer needs, or send a small gzip body that decompresses to a flood.

The padding is leading whitespace, so a padded body is still the documented JSON: a
client that reads it whole parses it fine, and only a cap on what it reads protects it.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Iterator

PAD_CHUNK = b" " * 65536


def echoed_errors(messages: list[str], keys: list[str]) -> bytes:
    """`{"errors": [...]}` with each key after the messages as sent, upper case, lower
    case, percent-encoded (every byte) and JSON-escaped (every character as `\\uXXXX` in
    the raw text, which a JSON parser turns back into the key)."""
    plain = list(messages)
    escaped = []
    for key in keys:
        plain += [
            f"echo: {key}",
            f"echo upper: {key.upper()}",
            f"echo lower: {key.lower()}",
            "echo percent: " + "".join(f"%{byte:02X}" for byte in key.encode()),
        ]
        escaped.append("echo json: " + "".join(f"\\u{ord(c):04x}" for c in key))
    items = [json.dumps(text) for text in plain] + [f'"{text}"' for text in escaped]
    return ('{"errors":[' + ",".join(items) + "]}").encode()


def padding(body: bytes, at_least: int) -> Iterator[bytes]:
    """Whitespace chunks that bring `body` up to `at_least` bytes, for streaming."""
    left = at_least - len(body)
    while left > 0:
        chunk = PAD_CHUNK[:left]
        left -= len(chunk)
        yield chunk


def gzip_bomb(body: bytes, at_least: int) -> bytes:
    """`body` after leading whitespace bringing it to `at_least` bytes, gzip-encoded.
    The whitespace is compressed once per size and its compressor state reused."""
    prefix, state = _compressed_padding(max(0, at_least - len(body)))
    tail = state.copy()
    return prefix + tail.compress(body) + tail.flush()


@functools.lru_cache(maxsize=2)
def _compressed_padding(size: int) -> tuple[bytes, zlib._Compress]:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = []
    left = size
    while left > 0:
        chunk = PAD_CHUNK[:left]
        left -= len(chunk)
        parts.append(compressor.compress(chunk))
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts), compressor

"""Keys out of everything the tool shows or keeps."""

import re

KEY_SHAPE = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{32})(?![0-9a-fA-F])")


def mask_key_shapes(text: str) -> str:
    """Mask what looks like a Datadog key, for readers that do not know the keys."""
    return KEY_SHAPE.sub("[redacted]", text)

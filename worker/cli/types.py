"""Argument types shared by every subcommand: a bad value fails at parse time (exit 2)
with a message saying what was expected, before anything is read or sent."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from worker.shard import Shard


def _bounded(kind: Callable[[str], float], low: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value >= low:  # also rejects NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def positive_int(text: str) -> int:
    return int(_bounded(int, 1, "a whole number of 1 or more")(text))


def bounded_int(high: int) -> Callable[[str], int]:
    """A whole number from 1 to `high`."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{text!r} is more than {high}, the most allowed")
        return value

    return parse


def positive_float(text: str) -> float:
    what = "a positive finite number"
    value = _bounded(float, 0, what)(text)
    if value == 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def non_negative_int(text: str) -> int:
    return int(_bounded(int, 0, "a whole number of 0 or more")(text))


def non_negative_float(text: str) -> float:
    return _bounded(float, 0, "a number of 0 or more")(text)


def fraction(text: str) -> float:
    """A share between 0 and 1, such as a failure rate."""
    value = _bounded(float, 0, "a share between 0 and 1")(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def shard(text: str) -> Shard:
    """`K/N`, shard K (0-based) of N."""
    try:
        return Shard.parse(text)
    except ValueError as exc:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--shard ")) from None


def agent_address(text: str) -> str:
    """A DogStatsD agent's address that parses and is there (`--statsd`); kept as given,
    since the run reads it again beside the environment's."""
    from worker.metrics import parse_destination  # the metrics' sink: only when asked for

    try:
        parse_destination(text).check_there()
    except ValueError as exc:
        message = str(exc).removeprefix("--statsd: ").removeprefix("--statsd ")
        raise argparse.ArgumentTypeError(message) from None
    return text


def rate_limit(text: str) -> tuple[int, float]:
    """`LIMIT/PERIOD` of the sandbox (`--sandbox-rate-limit`): imported only when given,
    since the sandbox is loaded only when a sandbox runs."""
    from worker.sandbox.ratelimit import parse_rate_limit

    try:
        return parse_rate_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

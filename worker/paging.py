"""Reading a paged listing to its end, when the answer carries no total and no links.

The end is an empty page, or a page shorter than the first one: a server may give fewer
items than asked on every page (a cap of its own), so "shorter than asked" would stop
after the first page of such a server. The cost of the rule is one extra request, for
an empty page, when the listing is a whole number of pages long.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from worker.answers import Answer, Meaning
from worker.api import Request

T = TypeVar("T")

Send = Callable[[Request], Awaitable[Answer]]
"""Sends one request (through the pacer and retries); never raises for what the network
or the server does."""


class ApiCallFailed(Exception):
    """A call whose final answer (after the sender's retries) was not a usable success.
    `answer` is None when the answer was a success whose body was not as documented."""

    def __init__(self, message: str, answer: Answer | None = None) -> None:
        super().__init__(message)
        self.answer = answer


def payload(answer: Answer, what: str) -> object:
    """The parsed body of a 2xx answer; ApiCallFailed naming `what` otherwise."""
    if answer.meaning is not Meaning.DONE:
        shown = "no answer" if answer.status is None else f"HTTP {answer.status}"
        error = answer.error or ""
        if error.startswith(f"{shown}:"):  # an HTTP error says its status itself
            raise ApiCallFailed(f"{what} failed: {error}", answer)
        raise ApiCallFailed(f"{what} failed ({shown}){': ' if error else ''}{error}", answer)
    if answer.body_problem is not None:
        raise ApiCallFailed(f"{what}: {answer.body_problem}", answer)
    return answer.payload


async def pages(
    send: Send,
    request: Callable[[int], Request],
    items: Callable[[object], list[T]],
    key: Callable[[T], object],
    what: str,
) -> AsyncIterator[list[T]]:
    """Each non-empty page, from page 0 on, until the end. `items` reads a page's payload
    (raising ApiCallFailed when it is not the documented shape); `key` identifies an item,
    so a server that ignores `page[number]` and sends one page forever is caught."""
    first_length: int | None = None
    previous: list[object] = []
    number = 0
    while True:
        page = items(payload(await send(request(number)), f"{what}, page {number}"))
        if not page:
            return
        keys = [key(item) for item in page]
        if keys == previous:
            raise ApiCallFailed(
                f"{what}: page {number} repeats page {number - 1}; the server does not "
                "page as documented (does a proxy drop the query string?)"
            )
        yield page
        if first_length is None:
            first_length = len(page)
        elif len(page) < first_length:
            return
        previous = keys
        number += 1

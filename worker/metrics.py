"""DogStatsD metrics, so a long backfill can be watched in Datadog itself.

`StatsdMetrics` is one more sink of the run's events. It sends through Datadog's own client with
client-side aggregation and buffering on: counters are summed in memory, latencies packed
many to a datagram, and both flushed by the client's thread every fraction of a second,
so a busy run does not send a datagram per event, and an absent or slow agent never holds
up a worker (the socket does not block; a datagram that cannot be sent is dropped).

Every metric is tagged `tool:rum-playlist-ingest` plus whatever the caller adds (the shard,
say); the client itself adds `env`, `service` and `version` from `DD_ENV`, `DD_SERVICE`
and `DD_VERSION`.
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from datadog.dogstatsd.base import DogStatsd

from worker.events import Answered, Ended, Event, Skipped
from worker.pacer import Pause
from worker.rows import InvalidRow, Outcome, Result

NAMESPACE = "rum_playlist_ingest"
TOOL_TAG = "tool:rum-playlist-ingest"
DEFAULT_PORT = 8125
_UNIX_SCHEMES = ("unix", "unixgram", "unixstream")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where the agent listens: a UDP host and port, or a Unix socket (as a URL the
    client understands, `unix://`, `unixgram://` or `unixstream://`)."""

    host: str | None = None
    port: int | None = None
    socket_path: str | None = None
    origin: str = field(default="--statsd", compare=False)
    """The option or variable it came from, for errors."""

    def check_there(self) -> None:
        """Raises ValueError when the agent's host does not resolve or its socket is not
        there: metrics sent over UDP to a mistyped name are lost without a word."""
        if self.socket_path is not None:
            path = urlsplit(self.socket_path).path
            if not Path(path).exists():
                raise ValueError(
                    f"{self.origin}: no agent socket at {path}; check the path (is the "
                    "agent running, its socket mounted?), or leave metrics off"
                )
            return
        try:
            socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ValueError(
                f"{self.origin}: the agent's host {self.host!r} does not resolve ({reason}); "
                "metrics sent there would be lost: check the name, or leave metrics off"
            ) from None


def parse_destination(text: str, *, origin: str = "--statsd") -> Destination:
    """Read `HOST:PORT`, `HOST` (port 8125), `[IPv6]:PORT`, `udp://HOST:PORT` or
    `unix:///path/to/dsd.socket`; `origin` names the option or variable in errors."""
    url = urlsplit(text if "://" in text else f"udp://{text}")
    if url.scheme in _UNIX_SCHEMES and url.path:
        return Destination(socket_path=text, origin=origin)
    try:
        port = url.port
    except ValueError:  # not a number, or out of range
        port = 0
    host = url.hostname
    if (
        url.scheme != "udp"
        or not host
        or url.path
        or port == 0
        or not host.isprintable()
        or " " in host
    ):
        raise ValueError(
            f"{origin} wants HOST:PORT (such as localhost:8125), udp://HOST:PORT"
            f" or unix:///path/to/dsd.socket, not {text!r}"
        )
    return Destination(host=host, port=port or DEFAULT_PORT, origin=origin)


def destination_from(option: str | None, environ: Mapping[str, str]) -> Destination | None:
    """`--statsd` if given, else the agent's usual variables, else None (metrics off).

    As in Datadog's clients, `DD_DOGSTATSD_URL` wins over `DD_AGENT_HOST` (with
    `DD_DOGSTATSD_PORT`). A port alone does not turn metrics on: it names no agent.
    """
    if option is not None:
        return parse_destination(option)
    if url := environ.get("DD_DOGSTATSD_URL"):
        return parse_destination(url, origin="DD_DOGSTATSD_URL")
    if host := environ.get("DD_AGENT_HOST"):
        port = environ.get("DD_DOGSTATSD_PORT") or str(DEFAULT_PORT)
        if not (port.isascii() and port.isdecimal() and 1 <= int(port) <= 65535):
            raise ValueError(f"DD_DOGSTATSD_PORT wants a port number (1-65535), not {port!r}")
        # The host as --statsd would take it: a name or an address, [bracketed] for IPv6.
        named = host if ":" not in host or host.startswith("[") else f"[{host}]"
        try:
            return parse_destination(f"{named}:{port}", origin="DD_AGENT_HOST")
        except ValueError:
            raise ValueError(
                f"DD_AGENT_HOST wants a host name or an address, not {host!r}"
            ) from None
    return None


class StatsdMetrics:
    """A sink of the run's events that counts outcomes, requests, 429s, retries and
    pauses, and samples latency, under the `rum_playlist_ingest.` namespace. It sends
    what is still buffered when the run ends."""

    def __init__(self, client: DogStatsd) -> None:
        self._client = client

    def __call__(self, event: Event) -> None:
        client = self._client
        if isinstance(event, Outcome):
            row = event.row
            client.increment(
                "rows",
                tags=[
                    f"outcome:{event.result.value}",
                    f"playlist_id:{row.playlist_id}",
                    f"data_source:{row.data_source}",
                ],
            )
        elif isinstance(event, Answered):
            status = event.status
            tags = [f"status:{status if status is not None else 'error'}"]
            client.increment("requests", tags=tags)
            # A distribution rather than a histogram: shards run on many hosts, and only
            # a distribution gives percentiles over all of them.
            client.distribution("latency_ms", event.latency_ms, tags=tags)
            if event.rate_limited:
                client.increment("rate_limited")
            if event.retry:
                client.increment("retries")
        elif isinstance(event, Skipped):
            by_playlist = collections.Counter((r.playlist_id, r.data_source) for r in event.rows)
            for (playlist_id, data_source), count in by_playlist.items():
                client.increment(
                    "rows",
                    count,
                    tags=[
                        f"outcome:{Result.SKIPPED.value}",
                        f"playlist_id:{playlist_id}",
                        f"data_source:{data_source}",
                    ],
                )
        elif isinstance(event, InvalidRow):
            client.increment("rows", tags=[f"outcome:{Result.INVALID.value}"])
        elif isinstance(event, Pause):
            # Not tagged with the reason: a sentence for people, not a small set of values.
            client.increment("paused_seconds", event.pause_s)
        elif isinstance(event, Ended):
            client.stop()


def statsd_from(
    option: str | None, environ: Mapping[str, str], *, tags: Sequence[str] = ()
) -> StatsdMetrics | None:
    """Metrics to `--statsd`, or to the agent the environment names, or None.

    Raises ValueError, naming the option or variable, when the destination is malformed.
    """
    destination = destination_from(option, environ)
    if destination is None:
        return None
    # Imported here: datadog pulls in requests, about 0.07 s of CPU at start-up (a tenth
    # of the tool's), which a run without metrics need not pay.
    from datadog.dogstatsd.base import DogStatsd

    client = DogStatsd(
        host=destination.host,
        port=destination.port,
        socket_path=destination.socket_path,
        namespace=NAMESPACE,
        constant_tags=[TOOL_TAG, *tags],
        disable_aggregation=False,
        disable_buffering=False,
    )
    return StatsdMetrics(client)

"""Metrics reach a real DogStatsD listener on loopback, with the right names and tags."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.events import Answered, Ended
from worker.metrics import Destination, StatsdMetrics, destination_from, statsd_from
from worker.pacer import Pause
from worker.rows import InvalidRow, Outcome, Result, Row


@dataclass(frozen=True)
class Datagram:
    """One metric line as the agent would read it."""

    name: str
    value: float
    kind: str
    tags: frozenset[str]


def parse(line: str) -> Datagram:
    """`name:value|type|@rate|#tag,tag|c:container`, sections after the type in any order."""
    head, kind, *sections = line.split("|")
    name, value = head.rsplit(":", 1)
    tags = next((s[1:].split(",") for s in sections if s.startswith("#")), [])
    return Datagram(name, float(value), kind, frozenset(tags))


def drive(metrics: StatsdMetrics) -> None:
    row = Row(playlist_id=42, session_id="s-1", ts=0, data_source="rum", source="in.csv", line=2)
    metrics(Outcome(row, Result.CREATED, http_status=201, attempts=1))
    metrics(Outcome(row, Result.CREATED, http_status=201, attempts=2))
    metrics(Outcome(row, Result.FAILED, http_status=400, attempts=1))
    metrics(InvalidRow(source="in.csv", line=3, reason="no session_id", fields={}))
    metrics(Answered(201, False, 12.5, retry=False))
    metrics(Answered(429, True, 30.0, retry=False))
    metrics(Answered(None, False, 5.0, retry=True))
    metrics(Pause(2.5, 2.5, "rate-limit window spent; waiting for it to reset", "sessions"))
    metrics(Ended({}))


Series = tuple[str, frozenset[str]]


@dataclass(frozen=True)
class Received:
    counts: dict[Series, float]
    """Summed by series: client-side aggregation may split a count across flushes."""
    samples: dict[Series, list[float]]


def receive(sock: socket.socket, *, series: int = 11) -> Received:
    """Read the tool's metrics until `series` series (what `drive` sends) have arrived,
    then whatever else is already queued (`close` has sent everything by then). The
    client's own telemetry, `datadog.dogstatsd.client.*`, is not ours and is left out."""
    counts: dict[Series, float] = defaultdict(float)
    samples: dict[Series, list[float]] = defaultdict(list)

    def take(payload: bytes) -> None:
        for line in payload.decode().splitlines():
            d = parse(line)
            if d.name.startswith("rum_playlist_ingest."):
                if d.kind == "c":
                    counts[d.name, d.tags] += d.value
                else:
                    samples[d.name, d.tags].append(d.value)

    while len(counts) + len(samples) < series:
        take(sock.recv(65_535))
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            take(sock.recv(65_535))
    return Received(dict(counts), dict(samples))


@pytest.fixture(autouse=True)
def _no_ambient_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client adds tags from these variables itself; keep the tests' tags exact."""
    for name in ("DD_ENV", "DD_SERVICE", "DD_VERSION", "DD_ENTITY_ID", "DATADOG_TAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DD_DOGSTATSD_DISABLE", raising=False)


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)  # a safety net for a broken client, not a measurement
        yield sock


def test_metrics_arrive_with_names_and_tags(udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    metrics = statsd_from(f"127.0.0.1:{port}", {}, tags=["shard:1/4"])
    assert metrics is not None
    drive(metrics)
    received = receive(udp)

    def series(name: str, *tags: str) -> Series:
        return f"rum_playlist_ingest.{name}", frozenset(
            {"tool:rum-playlist-ingest", "shard:1/4", *tags}
        )

    row = ("playlist_id:42", "data_source:rum")
    assert received.counts == {
        series("rows", "outcome:created", *row): 2,
        series("rows", "outcome:failed", *row): 1,
        series("rows", "outcome:invalid"): 1,
        series("requests", "status:201"): 1,
        series("requests", "status:429"): 1,
        series("requests", "status:error"): 1,
        series("rate_limited"): 1,
        series("retries"): 1,
        series("paused_seconds"): 2.5,
    }
    assert received.samples == {
        series("latency_ms", "status:201"): [12.5],
        series("latency_ms", "status:429"): [30.0],
        series("latency_ms", "status:error"): [5.0],
    }


@pytest.mark.parametrize(
    "environ",
    [
        {"DD_AGENT_HOST": "127.0.0.1", "DD_DOGSTATSD_PORT": "{port}"},
        {"DD_DOGSTATSD_URL": "udp://127.0.0.1:{port}", "DD_AGENT_HOST": "192.0.2.1"},
    ],
)
def test_the_agents_usual_variables_turn_metrics_on(
    udp: socket.socket, environ: dict[str, str]
) -> None:
    port = udp.getsockname()[1]
    metrics = statsd_from(None, {k: v.format(port=port) for k, v in environ.items()})
    assert metrics is not None
    drive(metrics)
    assert receive(udp).counts


def test_metrics_go_to_a_unix_socket() -> None:
    # A short directory: a socket path is limited to about a hundred bytes.
    with (
        tempfile.TemporaryDirectory(dir="/tmp") as directory,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        path = Path(directory, "dsd.socket")
        sock.bind(str(path))
        sock.settimeout(10)
        metrics = statsd_from(f"unix://{path}", {})
        assert metrics is not None
        drive(metrics)
        assert receive(sock).counts


def test_no_agent_named_means_no_metrics() -> None:
    assert statsd_from(None, {}) is None
    assert statsd_from(None, {"DD_DOGSTATSD_PORT": "8125"}) is None


@pytest.mark.parametrize(
    ("option", "environ", "destination"),
    [
        ("agent:9125", {"DD_AGENT_HOST": "other"}, Destination(host="agent", port=9125)),
        ("agent", {}, Destination(host="agent", port=8125)),
        ("[::1]:8126", {}, Destination(host="::1", port=8126)),
        (None, {"DD_AGENT_HOST": "10.0.0.7"}, Destination(host="10.0.0.7", port=8125)),
        (None, {"DD_AGENT_HOST": "::1"}, Destination(host="::1", port=8125)),
        (
            None,
            {"DD_DOGSTATSD_URL": "unix:///var/run/datadog/dsd.socket"},
            Destination(socket_path="unix:///var/run/datadog/dsd.socket"),
        ),
    ],
)
def test_destination_precedence(
    option: str | None, environ: dict[str, str], destination: Destination
) -> None:
    assert destination_from(option, environ) == destination


@pytest.mark.parametrize(
    ("option", "environ", "named"),
    [
        ("agent:http", {}, "--statsd"),
        ("agent:0", {}, "--statsd"),
        ("http://agent:8125", {}, "--statsd"),
        (None, {"DD_DOGSTATSD_URL": "tcp://agent:8125"}, "DD_DOGSTATSD_URL"),
        (None, {"DD_AGENT_HOST": "agent", "DD_DOGSTATSD_PORT": "x"}, "DD_DOGSTATSD_PORT"),
        (None, {"DD_AGENT_HOST": "agent", "DD_DOGSTATSD_PORT": "99999"}, "DD_DOGSTATSD_PORT"),
        (None, {"DD_AGENT_HOST": "agent", "DD_DOGSTATSD_PORT": "0"}, "DD_DOGSTATSD_PORT"),
        (None, {"DD_AGENT_HOST": "bad host"}, "DD_AGENT_HOST"),
        ("bad host:8125", {}, "--statsd"),
    ],
)
def test_a_malformed_destination_is_named_in_the_error(
    option: str | None, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        destination_from(option, environ)


def test_a_run_without_metrics_never_imports_the_datadog_package() -> None:
    """It costs a tenth of start-up; the run's modules must not import it eagerly."""
    code = "import sys, worker.cli, worker.ingest; print('datadog' in sys.modules)"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "False"


@pytest.mark.parametrize(
    ("option", "environ", "named"),
    [
        ("no-such-agent.invalid:8125", {}, "--statsd"),
        (None, {"DD_AGENT_HOST": "no-such-agent.invalid"}, "DD_AGENT_HOST"),
        (None, {"DD_DOGSTATSD_URL": "unix:///nonexistent/dsd.socket"}, "DD_DOGSTATSD_URL"),
    ],
)
def test_an_agent_that_is_not_there_is_named_before_the_run(
    option: str | None, environ: dict[str, str], named: str
) -> None:
    destination = destination_from(option, environ)
    assert destination is not None
    with pytest.raises(ValueError, match=f"^{named}: .*(does not resolve|no agent socket)"):
        destination.check_there()


def test_an_agent_by_address_or_by_a_name_that_resolves_is_there() -> None:
    for option in ("127.0.0.1:8125", "localhost", "[::1]:8126"):
        destination = destination_from(option, {})
        assert destination is not None
        destination.check_there()


def test_a_run_to_an_agent_that_does_not_resolve_exits_2_before_reading_a_row(
    tmp_path: Path,
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("playlist_id,session_id,ts\n1,00000000-0000-0000-0000-000000000001,1\n")
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run", str(rows), "--sandbox", "--no-progress",
         "--statsd", "no-such-agent.invalid:8125", "--log-format", "json"],
        check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--statsd: the agent's host 'no-such-agent.invalid' does not resolve" in done.stderr
    assert '"event":"row"' not in done.stderr

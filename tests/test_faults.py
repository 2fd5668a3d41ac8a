"""The fault matrix: the real command against a real server that misbehaves on purpose.

One case per fault the issue names. Each checks on the server's side what landed (every
valid row, or for the aborts how many requests came after the refusal), that the report
adds up, and that neither key shows in any output. Retries back off for milliseconds
(`--backoff-base`), so the whole matrix stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import sqlite3
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import (
    API_KEY,
    APP_KEY,
    KEYS,
    Finished,
    Key,
    MakeSandbox,
    assert_invariant,
    held,
    key_of,
    rows,
    run_cli,
    write_csv,
)

from worker.chunks import CHUNK
from worker.sandbox import FaultConfig, Sandbox
from worker.scrub import shapes

FAST_RETRIES = ("--backoff-base", "0.01", "--backoff-cap", "0.05")
PATIENT = ("--max-attempts", "20")
"""For the cases that must land every row: at a 30% fault share, 20 attempts all
failing is a one-in-3-billion chance, so a retry budget never decides a test."""


@dataclass(frozen=True)
class Ran:
    done: Finished
    report: dict[str, int]
    items: list[dict[str, object]]

    def keys_with(self, result: str) -> set[Key]:
        return {key_of(event) for event in self.done.events("row") if event["result"] == result}


async def run_rows(
    base_url: str,
    tmp_path: Path,
    count: int,
    *options: str,
    env: dict[str, str] = KEYS,
) -> Ran:
    """Run the CLI on `count` fresh rows; check the report file and that no key leaked."""
    items = rows(count)
    path = write_csv(tmp_path / "in.csv", items)
    report_path = tmp_path / "report.json"
    done = await run_cli(
        "run",
        str(path),
        "--base-url",
        base_url,
        "--no-journal",
        "--report",
        str(report_path),
        *FAST_RETRIES,
        *options,
        env=env,
    )
    assert report_path.exists(), done.stderr
    report = json.loads(report_path.read_text())
    assert_invariant(report)
    assert report["rows_read"] == count, done.stderr
    assert report["exit_code"] == done.code
    for text in (done.stdout, done.stderr, report_path.read_text()):
        assert API_KEY not in text
        assert APP_KEY not in text
    return Ran(done, report, items)


async def lands_everything(
    make_sandbox: MakeSandbox, tmp_path: Path, faults: FaultConfig, *options: str, count: int = 30
) -> tuple[Ran, Sandbox]:
    """The common case: whatever the fault, every row lands and nothing fails."""
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY, faults=faults)
    ran = await run_rows(sandbox.base_url, tmp_path, count, *PATIENT, *options)
    assert ran.done.code == 0, ran.done.stderr
    assert held(sandbox) == {key_of(item) for item in ran.items}
    assert ran.report["created"] + ran.report["already_present"] == count
    assert ran.report["requests"] == sandbox.stats.requests  # every attempt is counted
    return ran, sandbox


# --- faults every row survives ---------------------------------------------------------


async def test_5xx_before_applying_is_retried(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    ran, _ = await lands_everything(make_sandbox, tmp_path, FaultConfig(error_before=0.3, seed=1))

    assert ran.report["created"] == 30
    assert ran.report["retries"] > 0


@pytest.mark.parametrize(
    "faults",
    [FaultConfig(error_after=0.3, seed=2), FaultConfig(drop_after=0.3, seed=3)],
    ids=["5xx-after-applying", "dropped-after-applying"],
)
async def test_a_lost_answer_then_200_is_already_present_with_a_note(
    make_sandbox: MakeSandbox, tmp_path: Path, faults: FaultConfig
) -> None:
    ran, sandbox = await lands_everything(make_sandbox, tmp_path, faults)

    assert ran.report["failed"] == 0
    assert 0 < ran.report["already_present"] <= sandbox.stats.duplicate_puts
    for event in ran.done.events("row"):
        if event["result"] == "already_present":
            assert event["status"] == 200
            assert int(str(event["attempts"])) > 1
            assert "answer was lost" in str(event["note"])
        else:
            assert event["result"] == "created"
            assert "note" not in event


async def test_dropped_before_applying_is_retried(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    ran, sandbox = await lands_everything(
        make_sandbox, tmp_path, FaultConfig(drop_before=0.3, seed=4)
    )

    assert sandbox.stats.dropped > 0
    assert ran.report["created"] == 30


async def test_latency_under_the_timeout_is_just_slow(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    ran, _ = await lands_everything(
        make_sandbox, tmp_path, FaultConfig(latency_ms=(20, 60)), "--timeout", "10"
    )

    assert ran.report["created"] == 30
    assert ran.report["retries"] == 0


async def test_a_hang_longer_than_the_timeout_frees_the_worker(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    ran, sandbox = await lands_everything(
        make_sandbox,
        tmp_path,
        FaultConfig(hang=0.2, seed=5),
        "--timeout",
        "0.5",
        "--concurrency",
        "2",
    )

    assert sandbox.stats.hung > 0
    assert ran.report["retries"] >= sandbox.stats.hung


async def test_a_non_json_success_counts_and_warns_once(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    ran, _ = await lands_everything(make_sandbox, tmp_path, FaultConfig(non_json=0.5, seed=6))

    assert ran.report["created"] == 30
    assert ran.report["retries"] == 0
    (warning,) = ran.done.events("unexpected_success_body")
    assert "not JSON" in str(warning["detail"])


async def test_a_429_without_headers_waits_and_never_fails_a_row(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    ran, sandbox = await lands_everything(
        make_sandbox, tmp_path, FaultConfig(bare_429=0.2, seed=7), "--max-attempts", "1"
    )

    limited = ran.report["rate_limited"]
    assert limited == sandbox.stats.responses[429] > 0
    assert ran.report["created"] == 30
    # A 429 spends no attempt: each row took its one attempt, whatever 429s came first,
    # and a resend after a 429 is no retry (the 429s are counted in rate_limited).
    assert {event["attempts"] for event in ran.done.events("row")} == {1}
    assert (ran.report["retries"], ran.report["requests"]) == (0, 30 + limited)


# --- aborts: stop sending when the failure is the run's, not a row's -------------------


async def test_keys_revoked_mid_run_stop_within_concurrency_plus_5(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await make_sandbox(
        api_key=API_KEY, app_key=APP_KEY, faults=FaultConfig(revoke_keys_after=40)
    )

    ran = await run_rows(sandbox.base_url, tmp_path, 600, "--concurrency", "8")

    assert ran.done.code == 3
    assert sandbox.stats.after_revoke <= 8 + 5
    assert ran.report["created"] == 40
    assert held(sandbox) == ran.keys_with("created")
    assert ran.report["failed"] == 0  # a 403 is the keys' failure, not the row's
    assert ran.report["not_attempted"] == 600 - 40
    (aborted,) = ran.done.events("aborted")
    assert aborted["reason"] == "the API keeps refusing the keys"
    assert "403" in str(aborted["cause"])


async def test_keys_echoed_in_every_shape_reach_no_output_and_no_journal(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """Keys shaped as Datadog's (hex, which `quote` leaves as it is), echoed by every
    error in every shape the sandbox knows: every byte percent-encoded, every character
    JSON-escaped, in any case. None reaches the logs, the report or the journal."""
    api_key, app_key = "fedcba9876543210" * 2, "0123456789abcdef" * 2 + "01234567"
    sandbox = await make_sandbox(
        api_key=api_key, app_key=app_key, faults=FaultConfig(revoke_keys_after=5, echo_keys=True)
    )
    journal = tmp_path / "journal.sqlite3"
    path = write_csv(tmp_path / "in.csv", rows(40))
    done = await run_cli(
        "run", str(path), "--base-url", sandbox.base_url, "--journal", str(journal),
        "--report", str(tmp_path / "report.json"), "--concurrency", "4", *FAST_RETRIES,
        env={"DD_API_KEY": api_key, "DD_APP_KEY": app_key},
    )  # fmt: skip

    assert done.code == 3, done.stderr
    with contextlib.closing(sqlite3.connect(journal)) as conn:
        errors = [error for (error,) in conn.execute("SELECT error FROM rows") if error]
    assert errors, "the refusals' errors are kept"
    written = "\n".join([done.stdout, done.stderr, (tmp_path / "report.json").read_text(), *errors])
    for key in (api_key, app_key):
        every_byte = "".join(f"%{byte:02x}" for byte in key.encode())
        every_character = "".join(f"\\u{ord(c):04x}" for c in key)
        for shape in (*shapes(key), every_byte, every_character):
            assert shape.lower() not in written.lower(), shape
    assert "[redacted]" in written


async def test_wrong_keys_from_the_start_send_a_handful(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)

    # More rows than the reader hands over at once, so the abort meets rows in every
    # state (queued, half-queued, unread), and each must still be counted.
    ran = await run_rows(
        sandbox.base_url,
        tmp_path,
        1000,
        "--concurrency",
        "8",
        env={"DD_API_KEY": "not-the-api-key", "DD_APP_KEY": APP_KEY},
    )

    assert ran.done.code == 3
    assert sandbox.stats.requests <= 8 + 5
    assert held(sandbox) == set()
    assert ran.report["not_attempted"] == 1000


async def test_systemic_5xx_aborts_after_the_window(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(error_before=1.0))

    ran = await run_rows(
        sandbox.base_url, tmp_path, 300, "--abort-window", "10", "--concurrency", "4"
    )

    assert ran.done.code == 3
    assert 10 <= sandbox.stats.requests <= 10 + 4
    assert held(sandbox) == set()
    assert ran.report["not_attempted"] >= 300 - 4
    (aborted,) = ran.done.events("aborted")
    assert aborted["reason"] == "nearly every request is failing"


@pytest.mark.timeout(30)  # a guard, not a measure: without the fix this waits out --grace 300
async def test_a_server_that_hangs_aborts_at_max_stall_without_waiting_out_grace(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(hang=1.0))

    ran = await run_rows(
        sandbox.base_url, tmp_path, 10, "--concurrency", "2",
        "--max-stall", "1", "--timeout", "300", "--grace", "300",
    )  # fmt: skip

    assert ran.done.code == 3
    (aborted,) = ran.done.events("aborted")
    assert aborted["reason"] == "no progress"
    # Only the first request goes out until its answer shows the limits; it hangs, is
    # abandoned in flight, and is still a request sent, in the report as on the server.
    assert ran.report["requests"] == sandbox.stats.requests == sandbox.stats.hung == 1
    assert ran.report["not_attempted"] == 10
    (abandoned,) = [e for e in ran.done.events("row") if e["attempts"] == 1]
    assert "in flight" in abandoned["error"]
    assert held(sandbox) == set()


async def nightly(
    sandbox: Sandbox, tmp_path: Path, items: list[dict[str, object]], night: int
) -> tuple[Finished, dict[str, int], list[str]]:
    """One night's run of the same input with the same journal: what it did, its report
    and its dead letters."""
    report, dead = tmp_path / f"report-{night}.json", tmp_path / f"dead-{night}.ndjson"
    done = await run_cli(
        "run", str(write_csv(tmp_path / "in.csv", items)), "--base-url", sandbox.base_url,
        "--journal", str(tmp_path / "journal.sqlite3"), "--dead-letter", str(dead),
        "--report", str(report), "--abort-window", "10", "--concurrency", "4", *FAST_RETRIES,
        env=KEYS,
    )  # fmt: skip
    return done, json.loads(report.read_text()), dead.read_text().splitlines()


async def test_a_rerun_of_rows_still_refused_fails_them_without_aborting(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """Rows for a playlist that does not exist (404) fail each night. The rerun resends
    only those, every one refused: that is the rows' failure, not the run's, so it ends
    with exit 1 and all of them in the dead-letter file, not an abort (exit 3)."""
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY, playlists=frozenset({1001}))
    items = rows(60, playlists=(1001, 1002))  # 1002 does not exist

    first, report1, dead1 = await nightly(sandbox, tmp_path, items, 1)
    second, report2, dead2 = await nightly(sandbox, tmp_path, items, 2)

    assert (first.code, second.code) == (1, 1), second.stderr
    assert (report1["created"], report1["failed"]) == (30, 30)
    assert (report2["skipped"], report2["failed"], report2["not_attempted"]) == (30, 30, 0)
    assert len(dead1) == len(dead2) == 30
    assert second.events("aborted") == []


async def test_after_an_abort_rows_done_before_are_skipped_not_unsent(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """The rest of the input is read after an abort to account for every row: those the
    journal holds as done are `skipped`, as in a run that goes to the end. (Past the
    queue and a chunk of new rows, so the rows done before are read after the abort.)"""
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)
    done_before, new = rows(40), rows(2 * CHUNK + 100, start=40)
    first, _, _ = await nightly(sandbox, tmp_path, done_before, 1)
    assert first.code == 0, first.stderr
    sandbox.reconfigure(faults=FaultConfig(error_before=1.0))

    second, report, _ = await nightly(sandbox, tmp_path, [*new, *done_before], 2)

    assert second.code == 3
    assert_invariant(report)
    assert report["skipped"] == 40
    assert report["not_attempted"] == len(new)
    assert report["created"] == report["failed"] == 0


async def test_a_name_that_does_not_resolve_fails_its_rows(tmp_path: Path) -> None:
    """Few rows: each fails once its attempts are spent (exit 1). Past --abort-window
    requests the same failure aborts the run as systemic, as the next case shows."""
    ran = await run_rows(
        "https://nonexistent.invalid", tmp_path, 5, "--max-attempts", "2", "--timeout", "5"
    )

    assert ran.done.code == 1
    assert ran.report["failed"] == 5
    assert ran.report["requests"] == 10
    for event in ran.done.events("row"):
        assert "nonexistent.invalid" in str(event["error"])


async def test_a_refused_connection_is_retried_then_aborts_as_systemic(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    ran = await run_rows(
        f"http://127.0.0.1:{port}",
        tmp_path,
        600,
        "--max-attempts",
        "3",
        "--abort-window",
        "20",
        "--concurrency",
        "4",
    )

    assert ran.done.code == 3
    assert ran.report["requests"] <= 20 + 4
    assert ran.report["created"] == 0
    assert ran.report["not_attempted"] >= 600 - 20
    (aborted,) = ran.done.events("aborted")
    assert "Connect call failed" in str(aborted["cause"])


# --- TLS: verified always; a CA bundle for a re-signing proxy; HTTPS_PROXY -------------


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, as a corporate proxy's CA would be."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    made = Certificate(folder / "cert.pem", folder / "key.pem")
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(made.key),
            "-out",
            str(made.cert),
        ],
        check=True,
        capture_output=True,
    )
    return made


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _splice(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
) -> None:
    up_reader, up_writer = await asyncio.open_connection(host, port)
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


@contextlib.asynccontextmanager
async def serving(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """A TCP server on a loopback port, yielding the port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    async with server:
        yield server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def tls_in_front(sandbox: Sandbox, certificate: Certificate) -> AsyncIterator[str]:
    """The sandbox behind a TLS terminator with `certificate`; yields its https URL."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certificate.cert, certificate.key)
    plain_port = int(sandbox.base_url.rsplit(":", 1)[1])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _splice(reader, writer, "127.0.0.1", plain_port)

    async with serving(handle, tls) as port:
        yield f"https://127.0.0.1:{port}"


async def test_an_unknown_certificate_aborts_naming_ca_bundle(
    make_sandbox: MakeSandbox, tmp_path: Path, self_signed: Certificate
) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)

    async with tls_in_front(sandbox, self_signed) as url:
        ran = await run_rows(url, tmp_path, 20)

    assert ran.done.code == 3
    assert sandbox.stats.requests == 0
    assert ran.report["not_attempted"] == 20
    (aborted,) = ran.done.events("aborted")
    assert "--ca-bundle" in str(aborted["cause"])


async def test_ca_bundle_trusts_a_re_signing_proxy(
    make_sandbox: MakeSandbox, tmp_path: Path, self_signed: Certificate
) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)

    async with tls_in_front(sandbox, self_signed) as url:
        ran = await run_rows(url, tmp_path, 20, "--ca-bundle", str(self_signed.cert))

    assert ran.done.code == 0, ran.done.stderr
    assert held(sandbox) == {key_of(item) for item in ran.items}


async def test_an_unreadable_ca_bundle_exits_2_before_sending(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)
    path = write_csv(tmp_path / "in.csv", rows(3))

    done = await run_cli(
        "run",
        str(path),
        "--base-url",
        sandbox.base_url,
        "--no-journal",
        "--ca-bundle",
        str(tmp_path / "missing.pem"),
        env=KEYS,
    )

    assert done.code == 2
    assert "--ca-bundle" in done.stderr
    assert sandbox.stats.requests == 0


async def test_https_goes_through_the_proxy_named_by_https_proxy(
    make_sandbox: MakeSandbox, tmp_path: Path, self_signed: Certificate
) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)
    tunnels: list[str] = []

    async def connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
        assert method == "CONNECT"
        tunnels.append(target)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        host, port = target.rsplit(":", 1)
        await _splice(reader, writer, host, int(port))

    async with tls_in_front(sandbox, self_signed) as url, serving(connect_proxy) as proxy:
        env = {**KEYS, "HTTPS_PROXY": f"http://127.0.0.1:{proxy}", "NO_PROXY": "", "no_proxy": ""}
        ran = await run_rows(url, tmp_path, 20, "--ca-bundle", str(self_signed.cert), env=env)

    assert ran.done.code == 0, ran.done.stderr
    assert held(sandbox) == {key_of(item) for item in ran.items}
    assert tunnels
    assert set(tunnels) == {url.removeprefix("https://")}

"""Properties of the readers over generated inputs: valid rows round-trip exactly, every
line is accounted for once, and no input whatsoever makes them raise anything but
`InputError`."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import os
import tempfile
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from worker.input import InputError, ReaderOptions, format_row, open_inputs
from worker.rows import DATA_SOURCES, InvalidRow, Row

NOW = 1_795_651_200_000
DAY_MS = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROPERTIES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

session_ids = st.text(
    alphabet=st.characters(
        exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"), include_characters=" "
    ),
    min_size=1,
    max_size=60,
).filter(lambda text: text == text.strip() and text not in ("", ".", ".."))
data_sources = st.sampled_from(["", "rum", "product_analytics", "RUM", "Product_Analytics"])
timestamps = st.integers(min_value=1_000_000_000_000, max_value=NOW + DAY_MS)
playlist_ids = st.integers(min_value=1, max_value=2**63 - 1)
rows = st.lists(st.tuples(playlist_ids, session_ids, timestamps, data_sources), max_size=30)


def expected_rows(items: list[tuple[int, str, int, str]], lines: list[int]) -> list[Row]:
    return [
        Row(playlist_id, session_id, ts, data_source.lower() or "rum", "<stdin>", line)
        for (playlist_id, session_id, ts, data_source), line in zip(items, lines, strict=True)
    ]


def read(
    content: bytes, fmt: str | None, options: ReaderOptions | None = None
) -> list[Row | InvalidRow]:
    options = options or ReaderOptions(fmt=fmt, now_ms=lambda: NOW)
    with open_inputs(["-"], options, stdin=io.BytesIO(content)) as rs:
        return list(rs)


def read_or_refuse(content: bytes, fmt: str | None) -> list[Row | InvalidRow] | None:
    """The items, or None when the input is refused (the event names why, for statistics)."""
    try:
        return read(content, fmt)
    except InputError as error:
        event(str(error).split(": ")[1].split(" (")[0])
        return None


@st.composite
def ts_texts(draw: st.DrawFn, ts: int) -> str:
    """A ts as a file may hold it: digits, or an ISO date-time in some zone."""
    if draw(st.booleans()):
        return str(ts)
    offset = timezone(timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
    moment = (EPOCH + timedelta(milliseconds=ts)).astimezone(offset)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@PROPERTIES
@given(
    rows,
    st.sampled_from([",", ";", "\t", "|"]),
    st.sampled_from(["\n", "\r\n"]),
    st.lists(st.booleans(), min_size=30, max_size=30),
    st.data(),
)
def test_csv_round_trips_exactly(
    items: list[tuple[int, str, int, str]],
    delimiter: str,
    newline: str,
    blank_before: list[bool],
    data: st.DataObject,
) -> None:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
    writer.writerow(["playlist_id", "session_id", "ts", "data_source"])
    lines, line = [], 1
    for (playlist_id, session_id, ts, data_source), blank in zip(items, blank_before, strict=False):
        if blank:
            out.write(newline)
            line += 1
        writer.writerow([playlist_id, session_id, data.draw(ts_texts(ts)), data_source])
        line += 1
        lines.append(line)
    assert read(out.getvalue().encode(), "csv") == expected_rows(items, lines)


@PROPERTIES
@given(rows, st.booleans(), st.data())
def test_ndjson_round_trips_exactly(
    items: list[tuple[int, str, int, str]], ensure_ascii: bool, data: st.DataObject
) -> None:
    lines = []
    for playlist_id, session_id, ts, data_source in items:
        record: dict[str, object] = {
            "playlist_id": data.draw(st.sampled_from([playlist_id, str(playlist_id)])),
            "session_id": session_id,
            "ts": data.draw(st.sampled_from([ts, str(ts)]) | ts_texts(ts)),
        }
        if data_source:
            record["data_source"] = data_source
        lines.append(json.dumps(record, ensure_ascii=ensure_ascii))
    content = "\n".join(lines).encode()
    assert read(content, "ndjson") == expected_rows(items, list(range(1, len(items) + 1)))


def physical_lines(content: bytes) -> int:
    return content.count(b"\n") + (1 if content and not content.endswith(b"\n") else 0)


def check_shape(items: list[Row | InvalidRow], first_line: int, last_line: int) -> None:
    numbers = [item.line for item in items]
    assert numbers == sorted(set(numbers))
    assert all(first_line <= number <= last_line for number in numbers)
    for item in items:
        assert item.source == "<stdin>"
        if isinstance(item, InvalidRow):
            assert ": " in item.reason
            json.dumps(item.fields)


PIECES = [
    *(b",", b";", b"\t", b"\n", b"\r\n", b"\r", b'"', b" ", b"{", b"}", b"[", b":", b"\0"),
    *(b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\x1f\x8b", b"null", b"1e400", b"NaN", b"-1"),
    *(b"1001", b"1795000000000", b"1795000000", b'"ts"', b'"playlist_id"', b'"session_id"'),
    *(b"00000000-0000-0000-0000-000000000001", b"2026-11-18T11:06:40Z", b"rum", b"x" * 300),
]
garbage = st.binary(max_size=3000) | st.lists(st.sampled_from(PIECES), max_size=200).map(b"".join)


@PROPERTIES
@given(garbage, st.sampled_from(["csv", "ndjson", None]), st.booleans())
def test_arbitrary_bytes_never_raise_anything_but_input_error(
    content: bytes, fmt: str | None, with_header: bool
) -> None:
    if with_header:
        content = b"playlist_id,session_id,ts,data_source\n" + content
    items = read_or_refuse(content, fmt)
    if items is not None:
        check_shape(items, 1, max(1, physical_lines(content)))


@PROPERTIES
@given(garbage, st.integers(min_value=0, max_value=4000))
def test_damaged_gzip_never_raises_anything_but_input_error(content: bytes, cut: int) -> None:
    packed = gzip.compress(b"playlist_id,session_id,ts\n" + content)
    items = read_or_refuse(packed[:cut], "csv")
    if items is not None:
        check_shape(items, 2, physical_lines(content) + 2)


garbage_lines = st.binary(max_size=120).map(
    # No line breaks, and nothing that makes the whole input binary or gzip at its start.
    lambda line: line.replace(b"\n", b"").replace(b"\r", b"").replace(b"\0", b"").lstrip(b"\x1f")
)


def csv_blank(line: bytes) -> bool:
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return False
    return not any(field.strip() for field in text.split(","))


@PROPERTIES
@given(
    st.lists(
        st.tuples(
            garbage_lines.map(lambda line: line.replace(b'"', b"")),
            playlist_ids,
            session_ids,
            timestamps,
        ),
        max_size=40,
    )
)
def test_every_csv_line_is_one_row_or_one_invalid_row(
    pairs: list[tuple[bytes, int, str, int]],
) -> None:
    """Garbage (without quotes, which may span lines) alternates with valid rows, so the
    early stop cannot apply: each non-blank line is exactly one item, at its own line."""
    content = b"playlist_id,session_id,ts\n"
    expected_lines, valid = [], {}
    for index, (junk, playlist_id, session_id, ts) in enumerate(pairs):
        content += junk + b"\n"
        if not csv_blank(junk):
            expected_lines.append(2 + 2 * index)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow([playlist_id, session_id, ts])
        content += out.getvalue().encode()
        expected_lines.append(3 + 2 * index)
        valid[3 + 2 * index] = Row(playlist_id, session_id, ts, "rum", "<stdin>", 3 + 2 * index)
    items = read(content, "csv")
    assert [item.line for item in items] == expected_lines
    assert [item for item in items if item.line in valid] == list(valid.values())


@PROPERTIES
@given(st.lists(st.tuples(garbage_lines, playlist_ids, session_ids, timestamps), max_size=40))
def test_every_ndjson_line_is_one_row_or_one_invalid_row(
    pairs: list[tuple[bytes, int, str, int]],
) -> None:
    content = b""
    expected_lines, valid = [], {}
    for index, (junk, playlist_id, session_id, ts) in enumerate(pairs):
        content += junk + b"\n"
        if junk.strip(b" \t\x0b\x0c"):
            expected_lines.append(1 + 2 * index)
        record = {"playlist_id": playlist_id, "session_id": session_id, "ts": ts}
        content += json.dumps(record).encode() + b"\n"
        expected_lines.append(2 + 2 * index)
        valid[2 + 2 * index] = Row(playlist_id, session_id, ts, "rum", "<stdin>", 2 + 2 * index)
    items = read(content, "ndjson")
    assert [item.line for item in items] == expected_lines
    assert [item for item in items if item.line in valid] == list(valid.values())


@PROPERTIES
@given(
    st.lists(
        st.builds(
            Row,
            playlist_ids,
            session_ids,
            timestamps | st.none(),
            st.sampled_from(DATA_SOURCES),
            st.just("<stdin>"),
            st.just(0),
        ),
        max_size=30,
    ),
    st.sampled_from(DATA_SOURCES),
)
def test_format_row_is_read_back_as_the_same_row(items: list[Row], default_source: str) -> None:
    """The tool's own NDJSON output is its input: whatever the reader's default data source,
    and with or without a ts."""
    content = "".join(map(format_row, items)).encode()
    options = ReaderOptions(
        fmt="ndjson", default_data_source=default_source, now_ms=lambda: NOW, ts_required=False
    )
    numbered = [
        Row(item.playlist_id, item.session_id, item.ts, item.data_source, item.source, line)
        for line, item in enumerate(items, 1)
    ]
    assert read(content, None, options) == numbered
    if all(item.ts is not None for item in items):
        assert read(content, "ndjson") == numbered


@st.composite
def long_csv(draw: st.DrawFn) -> bytes:
    """Over a hundred lines, good rows mixed with garbage and stray quotes, so that the check
    stops somewhere inside: in a quoted field perhaps, or while lines are read again."""
    lines = [b"playlist_id,session_id,ts,data_source"]
    for index in range(draw(st.integers(100, 160))):
        kind = draw(st.sampled_from(["row", "row", "row", "quote", "garbage", "blank"]))
        if kind == "quote":
            lines.append(f'1001,s{index},1795000000000,"note'.encode())
        elif kind == "garbage":
            lines.append(draw(garbage_lines))
        elif kind == "blank":
            lines.append(b"")
        else:
            lines.append(f"1001,s{index},1795000000000,rum".encode())
    return b"\n".join(lines) + b"\n"


@PROPERTIES
@given(long_csv(), st.booleans())
def test_a_regular_file_reads_as_standard_input_does(content: bytes, packed: bool) -> None:
    """A regular file is closed after the check and reopened where it stopped; standard
    input is read in one go: the rows are the same, or both are refused alike."""
    if packed:
        content = gzip.compress(content)
    options = ReaderOptions(fmt="csv", now_ms=lambda: NOW)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "in.csv")
        with open(path, "wb") as file:
            file.write(content)
        try:
            with open_inputs([path], options) as stream:
                from_file: list[Row | InvalidRow] | str = [
                    item._replace(source="<stdin>")
                    if isinstance(item, Row)
                    else dataclasses.replace(item, source="<stdin>")
                    for item in stream
                ]
        except InputError as error:
            from_file = str(error).replace(path, "<stdin>")
    try:
        from_stdin: list[Row | InvalidRow] | str = read(content, "csv")
    except InputError as error:
        from_stdin = str(error)
    assert from_file == from_stdin

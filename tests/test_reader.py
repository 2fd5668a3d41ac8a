"""Reading inputs: formats, headers, compression, stdin, garbage and the early stop.

Every case writes real bytes to a file (or a stand-in stdin) and reads them through
`open_inputs`, as the runner and `validate` do.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.input import (
    MAX_LINE_BYTES,
    InputError,
    ReaderOptions,
    open_inputs,
)
from worker.rows import InvalidRow, Row

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_795_651_200_000  # 2026-11-26T00:00:00Z
TS = 1_795_000_000_000
UUID = "00000000-0000-0000-0000-000000000001"
OPTIONS = ReaderOptions(now_ms=lambda: NOW)
HEADER = b"playlist_id,session_id,ts\n"
NDJSON_SHAPE = '{"playlist_id": 1234567, "session_id": "…", "ts": 1704067200000}'


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs are named relative to the test's directory, as messages show them."""
    monkeypatch.chdir(tmp_path)


def read(
    tmp_path: Path, name: str, content: bytes, options: ReaderOptions = OPTIONS
) -> list[Row | InvalidRow]:
    (tmp_path / name).write_bytes(content)
    with open_inputs([name], options) as stream:
        return list(stream)


def refused(tmp_path: Path, name: str, content: bytes, options: ReaderOptions = OPTIONS) -> str:
    with pytest.raises(InputError) as error:
        read(tmp_path, name, content, options)
    return str(error.value)


def row(line: int, playlist_id: int = 1001, session_id: str = UUID, **extra: object) -> Row:
    fields: dict[str, object] = {"ts": TS, "data_source": "rum", **extra}
    return Row(
        playlist_id, session_id, int(str(fields["ts"])), str(fields["data_source"]), "", line
    )


def unclosed(what: str) -> str:
    """The reason given at the line where a quoted field that is never completed opens."""
    return (
        f"a quoted field opened on this line {what}: close its quote or remove it; "
        "the lines after it are read as rows of their own"
    )


def outcomes(items: list[Row | InvalidRow]) -> list[tuple[int, str]]:
    """Each item as (line, session id of a row, or the reason of an invalid row)."""
    return [
        (item.line, item.session_id if isinstance(item, Row) else item.reason) for item in items
    ]


def anonymous(items: list[Row | InvalidRow]) -> list[Row | InvalidRow]:
    """The items with their source blanked, to compare with `row()`."""
    return [
        Row(i.playlist_id, i.session_id, i.ts, i.data_source, "", i.line)
        if isinstance(i, Row)
        else InvalidRow("", i.line, i.reason, i.fields)
        for i in items
    ]


# CSV headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "line"),
    [
        ("playlist_id,session_id,ts", f"1001,{UUID},{TS}"),
        ("playlistId,sessionId,timestamp", f"1001,{UUID},{TS}"),
        (" Playlist ID , Session Id ,TS", f"1001,{UUID},{TS}"),
        ("PLAYLIST_ID,SESSION-ID,Timestamp_ms", f"1001,{UUID},{TS}"),
        ("playlist,session,ts_ms", f"1001,{UUID},{TS}"),
        ('"playlist_id","session_id","ts"', f"1001,{UUID},{TS}"),
        ("notes,ts,extra,session_id,playlist_id", f"x,{TS},y,{UUID},1001"),
        ("@session.id,playlist_id,ts", f"{UUID},1001,{TS}"),
    ],
)
def test_csv_header_names_match_ignoring_case_spaces_and_aliases(
    tmp_path: Path, header: str, line: str
) -> None:
    assert anonymous(read(tmp_path, "in.csv", f"{header}\n{line}\n".encode())) == [row(2)]


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.ndjson", "in.csv.gz"])
@pytest.mark.parametrize("content", [b"", b"\n  \n\r\n"])
def test_an_input_of_nothing_but_blank_lines_holds_no_rows_whatever_its_format(
    tmp_path: Path, name: str, content: bytes
) -> None:
    # A nightly export with nothing new is no error, as a CSV file or as NDJSON.
    if name.endswith(".gz"):
        content = gzip.compress(content)
    assert read(tmp_path, name, content) == []


def test_a_directory_given_as_an_input_is_named_as_one(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    with pytest.raises(InputError) as error, open_inputs(["exports"], OPTIONS):
        pass
    assert str(error.value) == (
        "exports: is a directory: name the files in it instead, such as exports/*.csv"
    )


def test_csv_data_source_column_and_aliases(tmp_path: Path) -> None:
    content = f"dataSource,playlist_id,session_id,ts\nproduct_analytics,1001,{UUID},{TS}\n"
    assert anonymous(read(tmp_path, "in.csv", content.encode())) == [
        row(2, data_source="product_analytics")
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"playlist_id,session,when\n",
            "in.csv: the header has no ts column (found 'playlist_id', 'session', 'when'; "
            "needed playlist_id, session_id, ts, optionally data_source): rename the columns, "
            "or check the delimiter (, ; tab or |)",
        ),
        (
            b"a;b\n",
            "in.csv: the header has no playlist_id, session_id, ts column (found 'a', 'b'; "
            "needed playlist_id, session_id, ts, optionally data_source): rename the columns, "
            "or check the delimiter (, ; tab or |)",
        ),
        (
            f"1001,{UUID},{TS}\n".encode(),
            f"in.csv: the header has no playlist_id, session_id, ts column (found '1001', "
            f"'{UUID}', '{TS}'; needed playlist_id, session_id, ts, optionally data_source): "
            "the first line looks like data; add a header line such as "
            "playlist_id,session_id,ts",
        ),
        (
            b"playlist_id,session_id,ts,timestamp\n",
            "in.csv: columns 'ts' and 'timestamp' both mean ts: remove or rename one",
        ),
        (
            b"playlist_id,session_id,ts\r1001,a,1\r",
            "in.csv: lines end with a bare carriage return (old Mac style): "
            "convert the file to LF or CRLF line endings",
        ),
        (
            b"playlist_id,session_\xff,ts\n",
            "in.csv: the header is not valid UTF-8 (byte 0xff at byte 21): save the file as UTF-8",
        ),
        (
            b"playlist_id,session\x00_id,ts\n" + f"1001,{UUID},{TS}\n".encode() * 5,
            "in.csv: the header contains a NUL byte: the file may be damaged or not UTF-8 text",
        ),
        (
            b"x" * (MAX_LINE_BYTES + 1) + b"\n",
            f"in.csv: line 1: the line is longer than {MAX_LINE_BYTES} bytes and was skipped: "
            "look for a missing newline or an unclosed quote",
        ),
    ],
)
def test_csv_header_problems_stop_the_run(tmp_path: Path, content: bytes, message: str) -> None:
    assert refused(tmp_path, "in.csv", content) == message


def test_csv_header_lists_at_most_ten_columns(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(15)).encode() + b"\n"
    assert "'c9' and 5 more;" in refused(tmp_path, "in.csv", header)


def test_csv_header_may_follow_blank_lines(tmp_path: Path) -> None:
    content = b"\n\n" + HEADER + f"1001,{UUID},{TS}\n".encode()
    assert anonymous(read(tmp_path, "in.csv", content)) == [row(4)]


@pytest.mark.parametrize("before", [b",,\n", b";;;\r\n", b" , \t|\n\n,,\n", b"\t\t\n"])
def test_csv_header_may_follow_lines_of_only_delimiters(tmp_path: Path, before: bytes) -> None:
    """Spreadsheet exports pad with such lines; they are skipped before the header as after."""
    content = before + HEADER + f"1001,{UUID},{TS}\n".encode()
    line = before.count(b"\n") + 2
    assert anonymous(read(tmp_path, "in.csv", content)) == [row(line)]


def test_csv_header_only_is_zero_rows(tmp_path: Path) -> None:
    assert read(tmp_path, "in.csv", HEADER) == []


# CSV dialects --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "delimiter"),
    [
        ("in.csv", ","),
        ("in.csv", ";"),
        ("in.csv", "\t"),
        ("in.csv", "|"),
        ("in.tsv", "\t"),
        ("in.tsv", ","),
    ],
)
def test_csv_delimiters_by_extension_or_header(tmp_path: Path, name: str, delimiter: str) -> None:
    content = delimiter.join(["playlist_id", "session_id", "ts"]) + "\n"
    content += delimiter.join(["1001", UUID, str(TS)]) + "\n"
    assert anonymous(read(tmp_path, name, content.encode())) == [row(2)]


def test_csv_bom_crlf_quotes_embedded_delimiters_and_newlines(tmp_path: Path) -> None:
    content = (
        b"\xef\xbb\xbfplaylist_id,session_id,ts,notes\r\n"
        b'1001,"' + UUID.encode() + b'",' + str(TS).encode() + b',"a, ""quoted"" note"\r\n'
        b"1002," + UUID.encode() + b"," + str(TS).encode() + b',"two\r\nlines"\r\n'
        b"1003," + UUID.encode() + b"," + str(TS).encode() + b",plain\r\n"
    )
    assert anonymous(read(tmp_path, "in.csv", content)) == [
        row(2),
        row(3, playlist_id=1002),
        row(5, playlist_id=1003),
    ]


def test_csv_blank_and_delimiter_only_lines_are_skipped(tmp_path: Path) -> None:
    content = HEADER + b"\n   \n,,\n , ,\r\n" + f"1001,{UUID},{TS}\n".encode() + b"\n"
    assert anonymous(read(tmp_path, "in.csv", content)) == [row(6)]


def test_csv_last_line_without_newline(tmp_path: Path) -> None:
    content = HEADER + f"1001,{UUID},{TS}".encode()
    assert anonymous(read(tmp_path, "in.csv", content)) == [row(2)]


def test_csv_short_row_without_the_optional_column_is_valid(tmp_path: Path) -> None:
    content = f"playlist_id,session_id,ts,data_source\n1001,{UUID},{TS}\n".encode()
    assert anonymous(read(tmp_path, "in.csv", content)) == [row(2)]


@pytest.mark.parametrize(
    ("line", "reason", "fields"),
    [
        (
            f"1001,{UUID}",
            "the row has 2 fields but the header has 3: add the missing values (an empty value "
            "still needs its ',')",
            {"playlist_id": "1001", "session_id": UUID},
        ),
        (
            "1001",
            "the row has 1 field but the header has 3: add the missing values (an empty value "
            "still needs its ',')",
            {"playlist_id": "1001"},
        ),
        (
            f"1001,,{TS}",
            "session_id is empty: give the replay's session id",
            {"playlist_id": "1001", "session_id": "", "ts": str(TS)},
        ),
        (
            f"1001,{UUID},{TS},oops",
            "the row has 4 fields but the header has 3: quote values that contain ','",
            {"playlist_id": "1001", "session_id": UUID, "ts": str(TS)},
        ),
        (
            f'1001,"{UUID}"x,{TS}',
            "the row cannot be split into fields (',' expected after '\"'): check its quotes",
            {},
        ),
        (
            f"abc,{UUID},{TS}",
            "playlist_id 'abc' is not a number: give the playlist's numeric id, e.g. 1234567",
            {"playlist_id": "abc", "session_id": UUID, "ts": str(TS)},
        ),
    ],
)
def test_csv_bad_rows(tmp_path: Path, line: str, reason: str, fields: dict[str, object]) -> None:
    content = HEADER + f"{line}\n1002,{UUID},{TS}\n".encode()
    assert anonymous(read(tmp_path, "in.csv", content)) == [
        InvalidRow("", 2, reason, fields),
        row(3, playlist_id=1002),
    ]


def test_csv_trailing_empty_fields_are_not_extra(tmp_path: Path) -> None:
    content = HEADER + f"1001,{UUID},{TS},,\n".encode()
    assert anonymous(read(tmp_path, "in.csv", content)) == [row(2)]


def test_csv_unclosed_quote_is_one_error_then_reading_resumes(tmp_path: Path) -> None:
    content = HEADER + f'1001,"{UUID},{TS}\n'.encode() + f"1002,{UUID},{TS}\n".encode()
    items = read(tmp_path, "in.csv", content)
    assert anonymous(items) == [
        InvalidRow("", 2, unclosed("is not closed before the end of the input"), {}),
        row(3, playlist_id=1002),
    ]


def test_csv_runaway_quote_is_bounded_and_the_lines_it_swallowed_are_read(
    tmp_path: Path,
) -> None:
    good = f"1001,{UUID},{TS}\n".encode()
    opening = f'1001,"{UUID},{TS}\n'.encode()
    content = HEADER + opening + good * 2000
    first, *rest = read(tmp_path, "in.csv", content)
    # the record's bytes, less its last newline, first exceed the bound on this line:
    past = 3 + (MAX_LINE_BYTES + 1 - len(opening)) // len(good)
    assert len(opening) + (past - 2) * len(good) - 1 > MAX_LINE_BYTES
    assert len(opening) + (past - 3) * len(good) - 1 <= MAX_LINE_BYTES
    assert first == InvalidRow(
        "in.csv",
        2,
        unclosed(f"runs on past {MAX_LINE_BYTES} bytes, to line {past}"),
        {},
    )
    assert all(isinstance(item, Row) for item in rest)
    assert [item.line for item in rest] == list(range(3, 2003))


# Unclosed quotes: one invalid row where the quote opens, then every line it swallowed is
# read again as a row of its own, at its own line: no good row vanishes behind a quote.

NOTE_HEADER = b"playlist_id,session_id,ts,note\n"
NUL_REASON = "the line contains a NUL byte: the file may be damaged or not UTF-8 text"
LONG_REASON = (
    f"the line is longer than {MAX_LINE_BYTES} bytes and was skipped: "
    "look for a missing newline or an unclosed quote"
)
FEW_FIELDS = "but the header has 4: add the missing values (an empty value still needs its ',')"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(
            [
                f'1001,d1,{TS},"unclosed',
                f"1001,d2,{TS},ok",
                f'1001,d3,{TS},"ok"',
                f"1001,d4,{TS},ok",
            ],
            [
                (2, unclosed("runs on to line 4 and breaks there (',' expected after '\"')")),
                (3, "d2"),
                (4, "d3"),
                (5, "d4"),
            ],
            id="closed-later-by-another-quote",
        ),
        pytest.param(
            [f'1001,d1,{TS},"unclosed', f"1001,d2,{TS},ok", f"1001,d3,{TS},ok"],
            [(2, unclosed("is not closed before the end of the input")), (3, "d2"), (4, "d3")],
            id="never-closed",
        ),
        pytest.param(
            [f"1001,d1,{TS},ok", f'1001,d2,{TS},"unclosed at the very end'],
            [(2, "d1"), (3, unclosed("is not closed before the end of the input"))],
            id="last-line-without-newline",
        ),
        pytest.param(
            [f'1001,d1,{TS},"one', f'1001,d2,{TS},"two', f"1001,d3,{TS},ok", f"1001,d4,{TS},ok"],
            [
                (2, unclosed("runs on to line 3 and breaks there (',' expected after '\"')")),
                (3, unclosed("is not closed before the end of the input")),
                (4, "d3"),
                (5, "d4"),
            ],
            id="a-line-read-again-opens-a-quote-too",
        ),
        pytest.param(
            [f'1001,d1,{TS},"x', f"1001,d2,{TS},ok", f"1001,d\0,{TS},ok", f"1001,d4,{TS},ok"],
            [
                (2, unclosed("runs on to line 4, which cannot be read")),
                (3, "d2"),
                (4, NUL_REASON),
                (5, "d4"),
            ],
            id="runs-into-a-nul-line",
        ),
        pytest.param(
            [f'1001,d1,{TS},"x', f"1001,d2,{TS},ok", f"1001,\udcff,{TS},ok", f"1001,d4,{TS},ok"],
            [
                (2, unclosed("runs on to line 4, which cannot be read")),
                (3, "d2"),
                (4, "the line is not valid UTF-8 (byte 0xff at byte 6): save the file as UTF-8"),
                (5, "d4"),
            ],
            id="runs-into-a-line-that-is-not-utf8",
        ),
        pytest.param(
            [
                f'1001,d1,{TS},"x',
                f"1001,d2,{TS},ok",
                "9" * (MAX_LINE_BYTES + 1),
                f"1001,d4,{TS},ok",
            ],
            [
                (2, unclosed("runs on to line 4, which cannot be read")),
                (3, "d2"),
                (4, LONG_REASON),
                (5, "d4"),
            ],
            id="runs-into-a-line-too-long",
        ),
        pytest.param(
            [f'1001,d1,{TS},"two', 'lines"', f"1001,d2,{TS},ok"],
            [(2, "d1"), (4, "d2")],
            id="a-quoted-field-that-closes-is-one-row",
        ),
        pytest.param(
            [f'1001,"d1"x,{TS},ok', f"1001,d2,{TS},ok"],
            [
                (
                    2,
                    "the row cannot be split into fields (',' expected after '\"'): "
                    "check its quotes",
                ),
                (3, "d2"),
            ],
            id="on-one-line",
        ),
    ],
)
def test_csv_unclosed_quote_reads_the_lines_it_swallowed_again(
    tmp_path: Path, lines: list[str], expected: list[tuple[int, str]]
) -> None:
    content = NOTE_HEADER + "\n".join(lines).encode("utf-8", "surrogateescape")
    items = read(tmp_path, "in.csv", content + (b"\n" if "very end" not in lines[-1] else b""))
    assert outcomes(items) == expected


def test_csv_quoted_field_past_the_bound_loses_only_itself(tmp_path: Path) -> None:
    """A quote opened before 70 lines of 1000 bytes: the quote is one invalid row, each line
    it swallowed another, and the lone closing quote, which opens a quote of its own when
    read again, takes nothing along: the good row after it is read."""
    content = (
        NOTE_HEADER
        + f'1001,L7,{TS},"\n'.encode()
        + (b"y" * 1000 + b"\n") * 70
        + b'"\n'
        + f"1001,L8,{TS},ok\n".encode()
    )
    items = read(tmp_path, "in.csv", content)
    # 23 bytes on line 2 and 1001 on each line after it: past 64 KiB on line 68
    assert outcomes(items) == [
        (2, unclosed(f"runs on past {MAX_LINE_BYTES} bytes, to line 68")),
        *((line, f"the row has 1 field {FEW_FIELDS}") for line in range(3, 73)),
        (73, unclosed("is not closed before the end of the input")),
        (74, "L8"),
    ]


def test_csv_quotes_that_never_pair_up_are_read_in_linear_time(tmp_path: Path) -> None:
    """`a","` keeps a quoted field open however it is read, so each of these lines opens a
    quote that swallows every line after it: reading again stops at a budget, and each
    line is still one row or one invalid row, at its own line."""
    good = "".join(f"1001,g{index},{TS}\n" for index in range(200))
    content = HEADER + good.encode() + b'a","\n' * 60_000 + f"1001,last,{TS}\n".encode()
    started = time.perf_counter()
    items = read(tmp_path, "in.csv", content)
    assert time.perf_counter() - started < 20  # all but the budget: hours
    assert [item.line for item in items] == list(range(2, 60_203))
    assert all(isinstance(item, Row) for item in items[:200])
    assert all(isinstance(item, InvalidRow) for item in items[200:60_200])
    assert any(
        isinstance(item, InvalidRow)
        and item.reason.startswith("the line is inside the quoted field opened on line ")
        for item in items
    )


# Garbage in, errors out ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["in.csv", "in.ndjson"])
def test_invalid_utf8_line_is_one_invalid_row(tmp_path: Path, name: str) -> None:
    good = (
        f"1001,{UUID},{TS}\n"
        if name.endswith(".csv")
        else f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}\n'
    ).encode()
    header = HEADER if name.endswith(".csv") else b""
    bad = good.replace(b"1001", b"10\xe9")
    items = anonymous(read(tmp_path, name, header + good + bad + good))
    offset = 1 if header else 0
    byte = bad.index(b"\xe9") + 1
    assert items == [
        row(1 + offset),
        InvalidRow(
            "",
            2 + offset,
            f"the line is not valid UTF-8 (byte 0xe9 at byte {byte}): save the file as UTF-8",
            {"raw": bad.decode("utf-8", "replace").rstrip("\n")},
        ),
        row(3 + offset),
    ]


@pytest.mark.parametrize("name", ["in.csv", "in.ndjson"])
def test_long_line_is_skipped_without_holding_it(tmp_path: Path, name: str) -> None:
    header = HEADER if name.endswith(".csv") else b""
    good = (
        f"1001,{UUID},{TS}\n"
        if name.endswith(".csv")
        else f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}\n'
    ).encode()
    long_line = b"9" * (8 * 1024 * 1024) + b"\n"
    path = tmp_path / name
    path.write_bytes(header + good + long_line + good)
    tracemalloc.start()
    try:
        with open_inputs([str(path)], OPTIONS) as stream:
            items = anonymous(list(stream))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    offset = 1 if header else 0
    assert items == [
        row(1 + offset),
        InvalidRow(
            "",
            2 + offset,
            f"the line is longer than {MAX_LINE_BYTES} bytes and was skipped: "
            "look for a missing newline or an unclosed quote",
            {"raw": "9" * 200},
        ),
        row(3 + offset),
    ]
    assert peak < 2 * 1024 * 1024


def test_line_of_exactly_the_maximum_is_read(tmp_path: Path) -> None:
    line = f"1001,{UUID},{TS},".encode()
    line += b"n" * (MAX_LINE_BYTES - len(line))
    content = b"playlist_id,session_id,ts,notes\n" + line + b"\n"
    assert anonymous(read(tmp_path, "in.csv", content)) == [row(2)]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
@pytest.mark.parametrize(("extra", "quoted"), [(0, False), (1, False), (0, True), (1, True)])
def test_the_line_limit_does_not_count_the_line_ending(
    tmp_path: Path, ending: bytes, extra: int, quoted: bool
) -> None:
    """64 KiB of content is read whatever ends the line (CRLF, LF, or the end of the file),
    on one line or as a quoted field over two; one byte more is too long."""
    start = f"1001,{UUID},{TS},".encode()
    notes = b"n" * (MAX_LINE_BYTES - len(start) + extra)
    if quoted:  # the quotes and the inner line break count: 4 bytes of the 64 KiB
        notes = b'"' + notes[:100] + b"\r\n" + notes[104:] + b'"'
    content = b"playlist_id,session_id,ts,notes\r\n" + start + notes + ending
    items = read(tmp_path, "in.csv", content + f"1002,{UUID},{TS}\r\n".encode() * bool(ending))
    if extra:
        assert isinstance(items[0], InvalidRow)
        assert items[0].line == 2
    else:
        assert anonymous(items[:1]) == [row(2)]
    # too long, the quoted field's second line is read again as a row of its own
    swallowed = [3] if quoted and extra else []
    after = [4 if quoted else 3] if ending else []
    assert [item.line for item in items[1:]] == swallowed + after


def test_nul_byte_after_the_sniffed_start_is_one_invalid_row(tmp_path: Path) -> None:
    good = f"1001,{UUID},{TS}\n".encode()
    padding = good * (9000 // len(good) + 1)
    count = padding.count(b"\n")
    content = HEADER + padding + b"1001,a\x00b,1\n" + good
    items = read(tmp_path, "in.csv", content)
    bad = items[count]
    assert isinstance(bad, InvalidRow)
    assert (bad.line, bad.reason) == (
        count + 2,
        "the line contains a NUL byte: the file may be damaged or not UTF-8 text",
    )
    assert len(items) == count + 2


@pytest.mark.parametrize("name", ["in.csv", "in.ndjson"])
@pytest.mark.parametrize("nuls", [b"\x00", b"\x00" * 40])
def test_nul_bytes_at_the_start_of_a_text_file_are_one_invalid_row(
    tmp_path: Path, name: str, nuls: bytes
) -> None:
    """A damaged text file is read: only a real binary file is refused outright."""
    good = (
        f"1001,{UUID},{TS}\n"
        if name.endswith(".csv")
        else f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}\n'
    ).encode()
    header = HEADER if name.endswith(".csv") else b""
    offset = 1 if header else 0
    bad = good.replace(b"1001", b"10" + nuls + b"01")
    items = anonymous(read(tmp_path, name, header + good + bad + good * 100))
    assert items[:3] == [
        row(1 + offset),
        InvalidRow("", 2 + offset, NUL_REASON, {"raw": bad.decode().rstrip("\n")}),
        row(3 + offset),
    ]
    assert len(items) == 102


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
            "in.csv: the file is binary, not CSV or NDJSON text (it has NUL bytes): "
            "check that this is the right file, and export it as UTF-8 text",
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x02\x00" + bytes(range(256)) * 4,
            "in.csv: the file is binary, not CSV or NDJSON text (it has NUL bytes): "
            "check that this is the right file, and export it as UTF-8 text",
        ),
        (
            HEADER + b"\x00\x00\x00\x01\x00\x02" * 20,
            "in.csv: the file is binary, not CSV or NDJSON text (it has NUL bytes): "
            "check that this is the right file, and export it as UTF-8 text",
        ),
        (
            "playlist_id,session_id,ts\n".encode("utf-16"),
            "in.csv: the file is UTF-16: save it as UTF-8",
        ),
        (
            f"playlist_id,session_id,ts\r\n1001,{UUID},{TS}\r\n".encode("utf-16-le"),
            "in.csv: the file is UTF-16: save it as UTF-8",
        ),
        (
            f"playlist_id;session_id;ts\n1001;{UUID};{TS}\n".encode("utf-16-be"),
            "in.csv: the file is UTF-16: save it as UTF-8",
        ),
        (
            gzip.compress(f"playlist_id,session_id,ts\n1001,{UUID},{TS}\n".encode("utf-16-le")),
            "in.csv: the file is UTF-16: save it as UTF-8",
        ),
        (
            b"\x1f\x8b\x08\x00garbage",
            "in.csv: cannot read it (Not a gzipped file (b'\\x1f\\x8b')): the file is damaged; "
            "copy it again",
        ),
    ],
)
def test_binary_files_stop_the_run(tmp_path: Path, content: bytes, message: str) -> None:
    if message.startswith("in.csv: cannot read it (Not"):
        # what zlib says differs between versions; the shape does not
        text = refused(tmp_path, "in.csv", content)
        assert text.startswith("in.csv: cannot read it (")
        assert text.endswith("): the file is damaged; copy it again")
    else:
        assert refused(tmp_path, "in.csv", content) == message


# gzip ------------------------------------------------------------------------------------


def sessions_csv(count: int) -> bytes:
    lines = [f"{1001 + i % 3},{UUID[:-6]}{i:06d},{TS + i}" for i in range(count)]
    return HEADER + "\n".join(lines).encode() + b"\n"


@pytest.mark.parametrize("name", ["in.csv.gz", "in.CSV.GZ", "in.csv"])
def test_gzip_is_recognised_by_content(tmp_path: Path, name: str) -> None:
    items = read(tmp_path, name, gzip.compress(sessions_csv(50)))
    assert [item.line for item in items] == list(range(2, 52))
    assert all(isinstance(item, Row) for item in items)


def test_gz_name_with_plain_content_is_read(tmp_path: Path) -> None:
    assert len(read(tmp_path, "in.csv.gz", sessions_csv(5))) == 5


def test_ndjson_gz(tmp_path: Path) -> None:
    content = f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}\n'.encode()
    assert anonymous(read(tmp_path, "in.jsonl.gz", gzip.compress(content))) == [row(1)]


def test_truncated_gzip_yields_rows_before_the_damage_then_says_where(tmp_path: Path) -> None:
    whole = gzip.compress(sessions_csv(20_000), compresslevel=1)
    items = read(tmp_path, "in.csv.gz", whole[: len(whole) * 3 // 4])
    *rows, last = items
    assert all(isinstance(item, Row) for item in rows)
    assert [item.line for item in rows] == list(range(2, len(rows) + 2))
    assert len(rows) > 10_000
    assert isinstance(last, InvalidRow)
    assert last.line == len(rows) + 2
    assert last.reason.startswith(f"the input cannot be read after line {len(rows) + 1} (")
    assert last.reason.endswith(
        "): it is truncated or damaged and the rest of it was not read; copy it again"
    )


def test_corrupted_gzip_data_is_an_invalid_row_not_a_crash(tmp_path: Path) -> None:
    whole = bytearray(gzip.compress(sessions_csv(20_000), compresslevel=1))
    middle = len(whole) // 2
    whole[middle : middle + 64] = bytes(64)
    items = read(tmp_path, "in.csv.gz", bytes(whole))
    assert isinstance(items[-1], InvalidRow)
    assert "truncated or damaged" in items[-1].reason


# NDJSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}', row(1)),
        (f'{{"playlist_id": "1001", "session_id": "{UUID}", "ts": "{TS}"}}', row(1)),
        (f'{{"playlist_id": 1.001e3, "session_id": "{UUID}", "ts": 1.795e12}}', row(1)),
        (f'{{"playlist_id": "1.001e+03", "session_id": "{UUID}", "ts": "1.795e12"}}', row(1)),
        (
            f'{{"playlistId": 1001, "sessionId": "{UUID}", "timestamp": {TS}, '
            '"dataSource": "PRODUCT_ANALYTICS"}',
            row(1, data_source="product_analytics"),
        ),
        (
            f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}, "data_source": null, '
            '"reason": "HTTP 500", "source": "x.csv", "line": 9, "extra": [1, {"a": 2}]}',
            row(1),
        ),
        (
            f'  {{"ts": "2026-11-18T11:06:40Z", "session_id": " {UUID} ", "playlist_id": 1001}}',
            row(1),
        ),
        (  # RFC 3339 allows a lowercase z
            f'{{"ts": "2026-11-18t11:06:40z", "session_id": "{UUID}", "playlist_id": 1001}}',
            row(1),
        ),
        (  # an alias beside the exact names, with a key that is no column
            f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}, '
            '"dataSource": "product_analytics", "note": "x"}',
            row(1, data_source="product_analytics"),
        ),
        (  # aliases with floats are read again exactly, not through the float
            f'{{"playlistId": 1.001e3, "sessionId": "{UUID}", "timestamp": 1.795e12}}',
            row(1),
        ),
        (  # an exact name beats an alias, wherever it stands
            f'{{"session": {{"id": "other"}}, "playlist_id": 1001, "session_id": "{UUID}", '
            f'"timestamp": 1795000099999, "ts": {TS}}}',
            row(1),
        ),
    ],
)
def test_ndjson_rows(tmp_path: Path, line: str, expected: Row) -> None:
    assert anonymous(read(tmp_path, "in.ndjson", line.encode() + b"\n")) == [expected]


@pytest.mark.parametrize(
    ("line", "reason", "fields"),
    [
        (
            "not json",
            f"the line is not valid JSON (Expecting value): each line must be one object "
            f"such as {NDJSON_SHAPE}",
            {"raw": "not json"},
        ),
        (
            '{"playlist_id": 1001,',
            "the line is not valid JSON (Expecting property name enclosed in double quotes): "
            f"each line must be one object such as {NDJSON_SHAPE}",
            {"raw": '{"playlist_id": 1001,'},
        ),
        (
            f'{{"playlist_id": NaN, "session_id": "{UUID}", "ts": {TS}}}',
            "the line is not valid JSON (NaN is not a JSON number): each line must be one "
            f"object such as {NDJSON_SHAPE}",
            {"raw": f'{{"playlist_id": NaN, "session_id": "{UUID}", "ts": {TS}}}'},
        ),
        (  # beyond Decimal's exponent range: found by the arbitrary-bytes property
            f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": 0e1000000000000000000}}',
            "the line is not valid JSON (the number 0e1000000000000000000 is out of range): "
            f"each line must be one object such as {NDJSON_SHAPE}",
            {
                "raw": f'{{"playlist_id": 1001, "session_id": "{UUID}", '
                '"ts": 0e1000000000000000000}'
            },
        ),
        (
            "[1001]",
            f"the line is an array, not a JSON object: each line must be one object such as "
            f"{NDJSON_SHAPE}",
            {"raw": "[1001]"},
        ),
        (
            '"x"',
            f"the line is a string, not a JSON object: each line must be one object such as "
            f"{NDJSON_SHAPE}",
            {"raw": '"x"'},
        ),
        (
            "null",
            f"the line is null, not a JSON object: each line must be one object such as "
            f"{NDJSON_SHAPE}",
            {"raw": "null"},
        ),
        (
            "true",
            f"the line is a boolean, not a JSON object: each line must be one object such as "
            f"{NDJSON_SHAPE}",
            {"raw": "true"},
        ),
        (
            "12",
            f"the line is a number, not a JSON object: each line must be one object such as "
            f"{NDJSON_SHAPE}",
            {"raw": "12"},
        ),
        (
            "[" * 5000,
            "the line is not valid JSON (maximum recursion depth exceeded while decoding a "
            f"JSON array from a unicode string): each line must be one object such as "
            f"{NDJSON_SHAPE}",
            {"raw": "[" * 200},
        ),
        (
            '{"session_id": 5}',
            "playlist_id is missing: give the playlist's numeric id, e.g. 1234567, or run "
            "with --playlist ID for rows that name none; "
            "session_id 5 is not a string: quote it in the JSON; ts is missing: ts must be "
            "milliseconds since 1970-01-01 UTC, or an ISO-8601 date-time with a zone",
            {"session_id": 5},
        ),
        (
            f'{{"playlist_id": 99999999999999999999, "session_id": "{UUID}", "ts": {TS}.0001}}',
            "playlist_id 99999999999999999999 is out of range: it must be from 1 to "
            f"9223372036854775807; ts {TS}.0001 is not a whole number of milliseconds: ts "
            "must be milliseconds since 1970-01-01 UTC, or an ISO-8601 date-time with a zone",
            {"playlist_id": "99999999999999999999", "session_id": UUID, "ts": f"{TS}.0001"},
        ),
        (
            f'{{"playlist_id": [1001], "session_id": "{UUID}", "ts": {TS}}}',
            "playlist_id [1001] is not a number: give the playlist's numeric id, e.g. 1234567",
            {"playlist_id": "[1001]", "session_id": UUID, "ts": TS},
        ),
        (
            f'{{"playlist_id": 1001, "session_id": "n26", "ts_ms": {TS}, '
            '"timestamp": 1795000099999}',
            "keys 'ts_ms' and 'timestamp' both mean ts: keep one",
            {"playlist_id": 1001, "session_id": "n26", "ts": TS},
        ),
        (
            f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}, '
            '"dataSource": "rum", "DATA-SOURCE": "product_analytics", "Data Source": "rum"}',
            "keys 'dataSource' and 'DATA-SOURCE' both mean data_source: keep one; keys "
            "'dataSource' and 'Data Source' both mean data_source: keep one",
            {"playlist_id": 1001, "session_id": UUID, "ts": TS, "data_source": "rum"},
        ),
        (
            f'{{"playlist_id": 1001, "session_id": {{"id": "n11"}}, "ts": {TS}}}',
            'session_id {"id": "n11"} is an object, not a string: give the session id itself '
            "as a JSON string",
            {"playlist_id": 1001, "session_id": '{"id": "n11"}', "ts": TS},
        ),
        (
            f'{{"playlist_id": 1001, "session_id": ["n11"], "ts": {TS}}}',
            'session_id ["n11"] is an array, not a string: give the session id itself as a '
            "JSON string",
            {"playlist_id": 1001, "session_id": '["n11"]', "ts": TS},
        ),
        (  # orjson reads 1024 levels, deeper than Python can write back: no RecursionError
            f'{{"playlist_id": 1001, "session_id": {"[" * 1000}{"]" * 1000}, "ts": {TS}}}',
            "session_id […] is an array, not a string: give the session id itself as a JSON string",
            {"playlist_id": 1001, "session_id": "[…]", "ts": TS},
        ),
        (
            f'{{"playlist_id": 1001, "session_id": "a\x00b", "ts": {TS}}}',
            "the line contains a NUL byte: the file may be damaged or not UTF-8 text",
            {"raw": f'{{"playlist_id": 1001, "session_id": "a\x00b", "ts": {TS}}}'},
        ),
        (
            f'{{"playlist_id": 1001, "session_id": "a\x01b", "ts": {TS}}}',
            "the line is not valid JSON (Invalid control character at column 39): each line "
            f"must be one object such as {NDJSON_SHAPE}",
            {"raw": f'{{"playlist_id": 1001, "session_id": "a\x01b", "ts": {TS}}}'},
        ),
        (
            '{"playlist_id": 1001, "session_id": "abc',
            "the line is not valid JSON (Unterminated string starting at column 37): each line "
            f"must be one object such as {NDJSON_SHAPE}",
            {"raw": '{"playlist_id": 1001, "session_id": "abc'},
        ),
    ],
)
def test_ndjson_bad_lines(
    tmp_path: Path, line: str, reason: str, fields: dict[str, object]
) -> None:
    good = f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}\n'.encode()
    items = anonymous(read(tmp_path, "in.ndjson", good + line.encode() + b"\n" + good))
    assert items == [row(1), InvalidRow("", 2, reason, fields), row(3)]


def test_ndjson_blank_lines_are_skipped(tmp_path: Path) -> None:
    good = f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}'.encode()
    content = b"\n  \r\n" + good + b"\r\n\t\n" + good
    assert anonymous(read(tmp_path, "in.ndjson", content)) == [row(3), row(5)]


# Formats, options and inputs -----------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "options", "message"),
    [
        ([], OPTIONS, "no input given: name one or more files, or - for standard input"),
        (
            ["-", "-"],
            OPTIONS,
            "- (standard input) is given more than once: it can be read only once",
        ),
        (
            ["in.txt"],
            OPTIONS,
            "in.txt: cannot tell the format from the name: use a .csv, .tsv, .ndjson or .jsonl "
            "name (optionally .gz), or pass --format csv or --format ndjson",
        ),
        (
            ["in.gz"],
            OPTIONS,
            "in.gz: cannot tell the format from the name: use a .csv, .tsv, .ndjson or .jsonl "
            "name (optionally .gz), or pass --format csv or --format ndjson",
        ),
        (["in.csv"], ReaderOptions(fmt="xml"), "the format 'xml' is unknown: use csv or ndjson"),
        (["in.csv"], ReaderOptions(ts_unit="us"), "the ts unit 'us' is not one of ms, s"),
        (
            ["in.csv"],
            ReaderOptions(default_data_source="logs"),
            "the default data source 'logs' is not one of rum, product_analytics",
        ),
        (
            ["missing.csv"],
            OPTIONS,
            "missing.csv: cannot read it (No such file or directory): check the path and its "
            "permissions",
        ),
        (
            ["."],
            ReaderOptions(fmt="csv"),
            ".: is a directory: name the files in it instead, such as ./*.csv",
        ),
    ],
)
def test_inputs_that_stop_the_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    paths: list[str],
    options: ReaderOptions,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.txt").write_bytes(HEADER)
    (tmp_path / "in.gz").write_bytes(HEADER)
    (tmp_path / "in.csv").write_bytes(HEADER)
    with pytest.raises(InputError) as error:
        open_inputs(paths, options, stdin=io.BytesIO(HEADER))
    assert str(error.value) == message


def test_format_option_overrides_the_name(tmp_path: Path) -> None:
    content = f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}\n'.encode()
    options = ReaderOptions(fmt="ndjson", now_ms=lambda: NOW)
    assert anonymous(read(tmp_path, "export.txt", content, options)) == [row(1)]


def test_options_apply_to_every_row(tmp_path: Path) -> None:
    content = f"playlist_id,session_id,ts\n1001,{UUID},{TS // 1000}\n".encode()
    options = ReaderOptions(
        default_data_source="product_analytics", ts_unit="s", now_ms=lambda: NOW
    )
    assert anonymous(read(tmp_path, "in.csv", content, options)) == [
        row(2, data_source="product_analytics")
    ]


def test_far_future_follows_the_injected_clock(tmp_path: Path) -> None:
    content = HEADER + f"1001,{UUID},{TS}\n".encode()
    options = ReaderOptions(now_ms=lambda: TS - 2 * 86_400_000)
    (item,) = read(tmp_path, "in.csv", content, options)
    assert isinstance(item, InvalidRow)
    assert "is more than 1 day in the future" in item.reason


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (HEADER + f"1001,{UUID},{TS}\n".encode(), None),
        (f'\n{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}\n'.encode(), None),
        (gzip.compress(HEADER + f"1001,{UUID},{TS}\n".encode()), None),
        (HEADER.replace(b",", b"\t") + f"1001\t{UUID}\t{TS}\n".encode(), "csv"),
    ],
)
def test_stdin_can_be_substituted_and_its_format_sniffed(content: bytes, fmt: str | None) -> None:
    options = ReaderOptions(fmt=fmt, now_ms=lambda: NOW)
    with open_inputs(["-"], options, stdin=io.BytesIO(content)) as stream:
        (item,) = list(stream)
        assert (stream.reading().bytes_read, stream.reading().bytes_total) == (len(content), None)
    assert isinstance(item, Row)
    assert (item.source, item.playlist_id, item.session_id) == ("<stdin>", 1001, UUID)


def test_real_stdin_through_a_subprocess() -> None:
    code = (
        "import sys\n"
        "from worker.input import ReaderOptions, open_inputs\n"
        "with open_inputs(['-'], ReaderOptions()) as stream:\n"
        "    for item in stream:\n"
        "        print(item.source, item.line, type(item).__name__)\n"
    )
    content = HEADER + f"1001,{UUID},1700000000000\nx,y,z\n".encode()
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=content,
        capture_output=True,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout.decode().splitlines() == ["<stdin> 2 Row", "<stdin> 3 InvalidRow"]


def test_inputs_are_read_in_order_with_their_own_names_and_lines(tmp_path: Path) -> None:
    first = tmp_path / "a.csv"
    first.write_bytes(HEADER + f"1001,{UUID},{TS}\n".encode())
    second = tmp_path / "b.ndjson"
    second.write_bytes(b'\n{"playlist_id": 1002, "session_id": "s", "ts": 1795000000000}\n')
    stdin = io.BytesIO(HEADER + f"1003,{UUID},{TS}\n".encode())
    with open_inputs([str(first), "-", str(second)], OPTIONS, stdin=stdin) as stream:
        assert stream.sources == (str(first), "<stdin>", str(second))
        assert [(i.source, i.line) for i in stream] == [
            (str(first), 2),
            ("<stdin>", 2),
            (str(second), 2),
        ]


def test_position_counts_raw_bytes_of_every_input(tmp_path: Path) -> None:
    plain = tmp_path / "a.csv"
    plain.write_bytes(sessions_csv(3000))
    packed = tmp_path / "b.csv.gz"
    packed.write_bytes(gzip.compress(sessions_csv(3000)))
    total = plain.stat().st_size + packed.stat().st_size
    with open_inputs([str(plain), str(packed)], OPTIONS) as stream:
        assert (stream.reading().bytes_read, stream.reading().bytes_total) == (0, total)
        seen = []
        for index, _ in enumerate(stream):
            if index % 500 == 0:
                seen.append(stream.reading().bytes_read)
        assert (stream.reading().bytes_read, stream.reading().bytes_total) == (total, total)
    assert seen == sorted(seen)
    assert 0 < seen[3] < plain.stat().st_size < seen[-1] <= total


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_every_file_is_closed(tmp_path: Path) -> None:
    """Files longer than the check's head are closed after it and reopened in their turn;
    a file the check read whole is not opened again."""
    paths = []
    for index in range(5):
        path = tmp_path / f"in{index}.csv"
        path.write_bytes(sessions_csv(250))
        paths.append(str(path))
    before = len(os.listdir("/proc/self/fd"))
    with open_inputs(paths, OPTIONS) as stream:
        assert len(os.listdir("/proc/self/fd")) == before
        iterator = iter(stream)
        next(iterator)
        assert len(os.listdir("/proc/self/fd")) == before + 1
    assert len(os.listdir("/proc/self/fd")) == before
    assert list(iterator) == []


def test_iteration_is_single_pass(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(sessions_csv(3))
    with open_inputs([str(path)], OPTIONS) as stream:
        assert len(list(stream)) == 3
        assert list(stream) == []


def test_many_regular_files_do_not_hold_a_descriptor_each(tmp_path: Path) -> None:
    paths = []
    for index in range(300):
        path = tmp_path / f"in{index}.csv"
        path.write_bytes(sessions_csv(1))
        paths.append(str(path))
    with open_inputs(paths, OPTIONS) as stream:
        assert sum(1 for _ in stream) == 300


# The early stop ---------------------------------------------------------------------------


def mostly_bad(total: int, bad: int) -> bytes:
    lines = [f"1001,{UUID},{TS}" if i >= bad else f"1001,{UUID},{i + 1}" for i in range(total)]
    return HEADER + "\n".join(lines).encode() + b"\n"


def test_wrong_file_stops_before_any_row(tmp_path: Path) -> None:
    message = refused(tmp_path, "in.csv", mostly_bad(1000, 90))
    hint = "ts must be milliseconds since 1970-01-01 UTC, or an ISO-8601 date-time with a zone"
    assert message == (
        "in.csv: 90 of the first 100 rows are invalid, so this looks like the wrong file, "
        f"delimiter or columns. First errors: line 2: ts '1' is before 2001-09-09: {hint}; "
        f"line 3: ts '2' is before 2001-09-09: {hint}; "
        f"line 4: ts '3' is before 2001-09-09: {hint}"
    )


@pytest.mark.parametrize(
    ("total", "bad", "stops"),
    [(1000, 89, False), (1000, 90, True), (10, 9, True), (9, 9, False), (20, 17, False)],
)
def test_early_stop_threshold(tmp_path: Path, total: int, bad: int, stops: bool) -> None:
    if stops:
        refused(tmp_path, "in.csv", mostly_bad(total, bad))
    else:
        items = read(tmp_path, "in.csv", mostly_bad(total, bad))
        assert sum(isinstance(item, InvalidRow) for item in items) == bad


def test_early_stop_leaves_out_the_lines_read_again_after_an_unclosed_quote(
    tmp_path: Path,
) -> None:
    """They follow from the one error at the quote; each quote that is not closed counts."""
    swallowed = HEADER + f'1001,{UUID},{TS},"\n'.encode() + b"x\n" * 50
    assert len(read(tmp_path, "in.csv", swallowed + f"1001,{UUID},{TS}\n".encode())) == 52
    every_row = HEADER + f'1001,{UUID},{TS},"note\n'.encode() * 50
    message = refused(tmp_path, "in.csv", every_row)
    assert message.startswith(
        "in.csv: 50 of the first 50 rows are invalid, so this looks like the wrong file, "
        "delimiter or columns. First errors: line 2: "
        + unclosed("runs on to line 3 and breaks there (',' expected after '\"')")
    )


def test_early_stop_checks_later_inputs_before_the_run(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_bytes(sessions_csv(5))
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(b"nope\n" * 50)
    with pytest.raises(InputError, match=r"^.*bad\.ndjson: 50 of the first 50 rows are invalid"):
        open_inputs([str(good), str(bad)], OPTIONS)


def test_stdin_rows_read_by_the_check_are_not_lost() -> None:
    stdin = io.BytesIO(sessions_csv(250))
    with open_inputs(["-"], OPTIONS, stdin=stdin) as stream:
        assert [item.line for item in stream] == list(range(2, 252))


def test_sample_inputs_hold_the_same_rows() -> None:
    samples = ROOT / "sample_inputs"
    with open_inputs([str(samples / "sessions.csv")], ReaderOptions()) as csv_rows:
        from_csv = [(r.key, r.ts) for r in csv_rows if isinstance(r, Row)]
    with open_inputs([str(samples / "sessions.ndjson")], ReaderOptions()) as json_rows:
        from_json = [(r.key, r.ts) for r in json_rows if isinstance(r, Row)]
    assert len(from_csv) == 300
    assert from_csv == from_json
    assert {key[0] for key, _ in from_csv} == {1001, 1002, 1003}
    assert {key[2] for key, _ in from_csv} == {"rum", "product_analytics"}


def test_ndjson_reads_the_same_without_orjson(tmp_path: Path) -> None:
    """orjson is optional: the stdlib fallback must give identical rows and reasons."""
    content = (ROOT / "sample_inputs" / "sessions.ndjson").read_bytes() + (
        b'{"playlist_id": 1e3, "session_id": "s", "ts": 1795000000000.5}\n'
        b'{"playlist_id": 99999999999999999999, "session_id": "s", "ts": 1795000000000}\n'
        b"[" * 3000 + b"\n\xff\n NaN\n\n"
    )
    path = tmp_path / "in.ndjson"
    path.write_bytes(content)
    code = (
        "import sys\n"
        "sys.modules['orjson'] = None  # makes `import orjson` fail\n"
        "from worker.input import ReaderOptions, open_inputs\n"
        "with open_inputs([sys.argv[1]], ReaderOptions(now_ms=lambda: 1795651200000)) as rows:\n"
        "    for item in rows:\n"
        "        print(repr(item))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, cwd=ROOT, check=True
    )
    with open_inputs([str(path)], OPTIONS) as stream:
        assert result.stdout.decode().splitlines() == [repr(item) for item in stream]


# Each head parsed once -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["in.csv", "in.csv.gz"])
def test_the_rows_the_check_read_are_handed_out_and_reading_goes_on_after_them(
    tmp_path: Path, name: str
) -> None:
    """The check's rows are not parsed again: a file changed on disk after the check (in
    place, same length) shows the old values in the check's rows and the new ones after."""
    content = sessions_csv(250)
    changed = content.replace(b",00000000-", b",ffffffff-")
    pack = gzip.compress if name.endswith(".gz") else bytes
    (tmp_path / name).write_bytes(pack(content))
    with open_inputs([name], OPTIONS) as stream:
        (tmp_path / name).write_bytes(pack(changed))
        items = list(stream)
    assert [item.line for item in items] == list(range(2, 252))
    ids = [item.session_id for item in items if isinstance(item, Row)]
    assert [session_id[0] for session_id in ids] == ["0"] * 100 + ["f"] * 150


def quotes_across_the_head(quote_line: int, swallowed: int) -> bytes:
    """Good rows, with a quote opened on `quote_line` that swallows `swallowed` lines
    before one that breaks it: the check stops inside, before or after the replay."""
    lines = []
    for line in range(2, 260):
        value = f"1001,{UUID[:-6]}{line:06d},{TS}"
        if line == quote_line:
            value += ',"note'
        elif quote_line < line <= quote_line + swallowed:
            value += ',x"y' if line == quote_line + swallowed else ""
        lines.append(value)
    return HEADER + "\n".join(lines).encode() + b"\n"


@pytest.mark.parametrize("pack", [bytes, gzip.compress])
@pytest.mark.parametrize(("quote_line", "swallowed"), [(90, 20), (100, 1), (101, 5), (60, 80)])
def test_a_file_paused_after_its_check_reads_as_standard_input_does(
    tmp_path: Path, pack: Callable[[bytes], bytes], quote_line: int, swallowed: int
) -> None:
    """A regular file is closed after the check, mid-replay perhaps, and reopened where it
    stopped; standard input is read in one go. Both give the same rows."""
    content = pack(quotes_across_the_head(quote_line, swallowed))
    (tmp_path / "in.csv").write_bytes(content)
    with open_inputs(["in.csv"], OPTIONS) as stream:
        from_file = list(stream)
    with open_inputs(["-"], OPTIONS, stdin=io.BytesIO(content)) as stream:
        from_stdin = list(stream)
    assert anonymous(from_file) == anonymous(from_stdin)
    assert [item.line for item in from_file] == list(range(2, 260))  # every line once
    assert isinstance(from_file[quote_line - 2], InvalidRow)
    assert from_file[quote_line - 2].reason.startswith("a quoted field opened on this line")


# --playlist, rows without ts, and the column names exports use -------------------------

TO_PLAYLIST = ReaderOptions(now_ms=lambda: NOW, default_playlist=1001)
WITHOUT_TS = ReaderOptions(now_ms=lambda: NOW, ts_required=False)
OTHER_PLAYLIST = (
    "playlist_id {value} is another playlist than --playlist 1001: remove the row, or leave "
    "its playlist_id empty to send it there, or run without --playlist to send each row to "
    "its own playlist"
)


@pytest.mark.parametrize(
    ("name", "content", "lines"),
    [
        ("in.csv", f"session_id,ts\n{UUID},{TS}\n", [2]),
        ("in.csv", f"ts;session_id\n{TS};{UUID}\n", [2]),
        ("in.csv", f"playlist_id,session_id,ts\n1001,{UUID},{TS}\n,{UUID},{TS}\n", [2, 3]),
        ("in.ndjson", f'{{"session_id": "{UUID}", "ts": {TS}}}\n', [1]),
        ("in.ndjson", f'{{"session_id": "{UUID}", "ts": {TS}, "playlist_id": null}}\n', [1]),
        ("in.ndjson", f'{{"sessionId": "{UUID}", "ts": {TS}, "playlist": "1001"}}\n', [1]),
    ],
)
def test_rows_without_a_playlist_or_naming_the_same_go_to_the_default_playlist(
    tmp_path: Path, name: str, content: str, lines: list[int]
) -> None:
    items = read(tmp_path, name, content.encode(), TO_PLAYLIST)
    assert anonymous(items) == [row(line) for line in lines]


@pytest.mark.parametrize(
    ("name", "content", "value", "fields"),
    [
        (
            "in.csv",
            f"playlist_id,session_id,ts\n1001,{UUID},{TS}\n2002,{UUID},{TS}\n",
            "'2002'",
            {"playlist_id": "2002", "session_id": UUID, "ts": str(TS)},
        ),
        (
            "in.ndjson",
            f'{{"session_id": "{UUID}", "ts": {TS}}}\n'
            f'{{"session_id": "{UUID}", "ts": {TS}, "playlist_id": 2002}}\n',
            "2002",
            {"session_id": UUID, "ts": TS, "playlist_id": 2002},
        ),
        (  # an alias of playlist_id is read too: it is not silently left out
            "in.ndjson",
            f'{{"session_id": "{UUID}", "ts": {TS}}}\n'
            f'{{"session_id": "{UUID}", "ts": {TS}, "playlist": 2002}}\n',
            "2002",
            {"session_id": UUID, "ts": TS, "playlist_id": 2002},
        ),
    ],
)
def test_a_row_naming_another_playlist_than_the_default_is_invalid(
    tmp_path: Path, name: str, content: str, value: str, fields: dict[str, object]
) -> None:
    first, second = read(tmp_path, name, content.encode(), TO_PLAYLIST)
    assert isinstance(first, Row)
    assert first.playlist_id == 1001
    assert second == InvalidRow(name, first.line + 1, OTHER_PLAYLIST.format(value=value), fields)


def test_without_a_default_playlist_a_row_still_needs_one(tmp_path: Path) -> None:
    assert refused(tmp_path, "in.csv", f"session_id,ts\n{UUID},{TS}\n".encode()) == (
        "in.csv: the header has no playlist_id column (found 'session_id', 'ts'; needed "
        "playlist_id, session_id, ts, optionally data_source): rename the columns, or check "
        "the delimiter (, ; tab or |)"
    )
    (item,) = read(tmp_path, "in.ndjson", f'{{"session_id": "{UUID}", "ts": {TS}}}\n'.encode())
    assert isinstance(item, InvalidRow)
    assert item.reason == (
        "playlist_id is missing: give the playlist's numeric id, e.g. 1234567, or run with "
        "--playlist ID for rows that name none"
    )


def test_the_header_says_which_columns_the_options_still_need(tmp_path: Path) -> None:
    assert refused(tmp_path, "in.csv", b"id,when\n", TO_PLAYLIST) == (
        "in.csv: the header has no session_id, ts column (found 'id', 'when'; needed "
        "session_id, ts, optionally playlist_id, data_source): rename the columns, or check "
        "the delimiter (, ; tab or |)"
    )
    assert refused(tmp_path, "in.csv", f"1001,{UUID}\n".encode(), WITHOUT_TS) == (
        f"in.csv: the header has no playlist_id, session_id column (found '1001', '{UUID}'; "
        "needed playlist_id, session_id, optionally ts, data_source): the first line looks "
        "like data; add a header line such as playlist_id,session_id"
    )


@pytest.mark.parametrize("playlist", [0, -5, 2**63])
def test_the_default_playlist_must_be_a_playlist_id(tmp_path: Path, playlist: int) -> None:
    options = ReaderOptions(now_ms=lambda: NOW, default_playlist=playlist)
    message = refused(tmp_path, "in.csv", HEADER, options)
    assert message == (
        f"--playlist {playlist}: playlist_id {playlist} is out of range: it must be from 1 to "
        f"{2**63 - 1}"
    )


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("in.csv", f"@session.id,date\n{UUID},2026-11-18T11:06:40.000Z\n"),
        ("in.csv", f"session.id,timestamp\n{UUID},2026-11-18T13:06:40+02:00\n"),
        (  # the shape of a RUM Explorer CSV export
            "in.csv",
            f'date,service,@session.id,@view.url\n2026-11-18T11:06:40.000Z,web,{UUID},"/a,b"\n',
        ),
        ("in.ndjson", f'{{"@session.id": "{UUID}", "date": "2026-11-18T11:06:40.000Z"}}\n'),
        ("in.ndjson", f'{{"session.id": "{UUID}", "timestamp": "2026-11-18T11:06:40Z"}}\n'),
    ],
)
def test_the_column_names_of_exports_with_iso_dates(
    tmp_path: Path, name: str, content: str
) -> None:
    items = read(tmp_path, name, content.encode(), TO_PLAYLIST)
    assert anonymous(items) == [row(1 if name.endswith("ndjson") else 2)]


def test_two_names_for_the_time_stay_ambiguous(tmp_path: Path) -> None:
    assert refused(tmp_path, "in.csv", b"date,timestamp,session_id\n", TO_PLAYLIST) == (
        "in.csv: columns 'date' and 'timestamp' both mean ts: remove or rename one"
    )
    line = f'{{"session_id": "{UUID}", "date": "2026-11-18T11:06:40Z", "timestamp": {TS}}}\n'
    (item,) = read(tmp_path, "in.ndjson", line.encode(), TO_PLAYLIST)
    assert isinstance(item, InvalidRow)
    assert item.reason == "keys 'date' and 'timestamp' both mean ts: keep one"


def test_a_date_without_a_zone_is_invalid(tmp_path: Path) -> None:
    content = f"session_id,date\n{UUID},2026-11-18T11:06:40\n".encode()
    (item,) = read(tmp_path, "in.csv", content, TO_PLAYLIST)
    assert isinstance(item, InvalidRow)
    assert item.reason == (
        "ts '2026-11-18T11:06:40' has no time zone: add one, e.g. 2026-11-18T11:06:40Z for "
        "UTC or +02:00 for an offset"
    )


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("in.csv", f"playlist_id,session_id\n1001,{UUID}\n"),
        ("in.csv", f"playlist_id,session_id,ts\n1001,{UUID},\n"),
        ("in.csv", f"playlist_id,session_id,ts\n1001,{UUID}\n"),
        ("in.ndjson", f'{{"playlist_id": 1001, "session_id": "{UUID}"}}\n'),
        ("in.ndjson", f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": null}}\n'),
        ("in.ndjson", f'{{"playlistId": 1001, "session_id": "{UUID}", "ts": ""}}\n'),
    ],
)
def test_rows_may_leave_ts_out_when_it_is_not_required(
    tmp_path: Path, name: str, content: str
) -> None:
    (item,) = read(tmp_path, name, content.encode(), WITHOUT_TS)
    line = 1 if name.endswith("ndjson") else 2
    assert item == Row(1001, UUID, None, "rum", name, line)


@pytest.mark.parametrize("name", ["in.csv", "in.ndjson"])
def test_a_ts_given_when_not_required_is_still_checked(tmp_path: Path, name: str) -> None:
    if name == "in.csv":
        content = f"playlist_id,session_id,ts\n1001,{UUID},{TS}\n1001,{UUID},1795000000\n"
    else:
        content = (
            f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": {TS}}}\n'
            f'{{"playlist_id": 1001, "session_id": "{UUID}", "ts": 1795000000}}\n'
        )
    first, second = read(tmp_path, name, content.encode(), WITHOUT_TS)
    assert isinstance(first, Row)
    assert first.ts == TS
    assert isinstance(second, InvalidRow)
    assert "1795000000" in second.reason
    assert "looks like seconds (2026-11-18T11:06:40Z), not milliseconds" in second.reason


def test_a_nested_value_under_an_alias_is_echoed_exactly(tmp_path: Path) -> None:
    """Lines read by aliases skip the exact parse only when every value is exact as parsed."""
    line = f'{{"playlistId": 1001, "session": {{"id": 1.10}}, "ts": {TS}}}\n'
    (item,) = read(tmp_path, "in.ndjson", line.encode())
    assert isinstance(item, InvalidRow)
    assert item.fields["session_id"] == '{"id": "1.10"}'  # the digits as written

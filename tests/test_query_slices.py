"""`--shard K/N` with `--query`: the range arithmetic, in process with a fake clock.

Which moments each shard searches, night after night, with clocks that disagree by
minutes (across an hour boundary too) and journals that disagree when a shard missed a
night: no moment is searched by two shards, and none is left to no shard. The wire is in
`tests/test_query_run.py` (the shards as processes, against the sandbox) and
`tests/test_query_source.py` (a shard's search, page by page).
"""

from __future__ import annotations

from itertools import combinations, pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.journal import QueryKey
from worker.query.dates import LAST_MARGIN_MS, DateError, TimeRange, iso
from worker.query.slices import SLICE_MS, Slices, check_sharded, slice_start
from worker.query.spec import QuerySpec
from worker.rowsource import query_key, resolve_range
from worker.settings import QueryOptions
from worker.shard import Shard

HOUR = SLICE_MS
DAY = 24 * HOUR
WEEK = 7 * DAY
MINUTE = 60_000
MIDNIGHT = 1_767_225_600_000
"""2026-01-01T00:00:00Z."""
NIGHTLY = QueryOptions("*", from_text="last", to_text="now", first_from=iso(MIDNIGHT - 7 * DAY))

Span = tuple[int, int]


def spans(pieces: list[TimeRange]) -> list[Span]:
    return sorted((piece.from_ms, piece.to_ms) for piece in pieces)


def merged(pieces: list[Span]) -> list[Span]:
    """The union of `pieces`, as disjoint spans in order."""
    union: list[Span] = []
    for start, end in sorted(pieces):
        if union and start <= union[-1][1]:
            union[-1] = (union[-1][0], max(union[-1][1], end))
        else:
            union.append((start, end))
    return union


@given(
    start=st.integers(min_value=0, max_value=4 * 10**12),
    length=st.integers(min_value=1, max_value=60 * HOUR),
    count=st.integers(min_value=1, max_value=12),
)
def test_the_shards_slices_tile_any_range_exactly(start: int, length: int, count: int) -> None:
    span = TimeRange(start, start + length)
    shards = [Slices(span, Shard(index, count)) for index in range(count)]
    pieces = spans([piece for slices in shards for piece in slices])

    assert pieces[0][0] == span.from_ms
    assert pieces[-1][1] == span.to_ms
    assert all(before[1] == after[0] for before, after in pairwise(pieces))  # no gap, no overlap
    assert [len(slices) for slices in shards] == [len(list(slices)) for slices in shards]
    if count > 1:  # each slice lies in one hour, the hour its shard owns
        for index, slices in enumerate(shards):
            assert all(piece.from_ms // HOUR % count == index for piece in slices)
            assert all((piece.to_ms - 1) // HOUR == piece.from_ms // HOUR for piece in slices)


def test_a_shard_of_one_searches_its_range_in_one_piece() -> None:
    span = TimeRange(MIDNIGHT - 5 * HOUR + 7, MIDNIGHT + 3)
    assert list(Slices(span, Shard(0, 1))) == [span]
    assert Slices(span, Shard(0, 1)).to_json()["count"] == 1


def test_a_shard_whose_hours_miss_the_range_has_nothing_to_search() -> None:
    span = TimeRange(MIDNIGHT, MIDNIGHT + 30 * MINUTE)
    assert list(Slices(span, Shard(1, 2))) == []
    assert Slices(span, Shard(1, 2)).to_json() == {"count": 0, "first": None, "last": None}
    assert len(Slices(span, Shard(0, 2))) == 1


night_clocks = st.lists(
    st.tuples(st.integers(min_value=-40 * MINUTE, max_value=40 * MINUTE), st.booleans()),
    min_size=3,
    max_size=3,
)


@given(
    count=st.integers(min_value=2, max_value=3),
    nights=st.lists(night_clocks, min_size=2, max_size=4),
)
def test_nightly_shards_with_their_own_clocks_and_journals_search_each_moment_once(
    count: int, nights: list[list[tuple[int, bool]]]
) -> None:
    """Night n starts at 02:30 give or take 40 minutes for each shard (so shards fall on
    either side of 02:00 and 03:00), and a shard may miss a night (its journal then keeps
    an older end) but not the last: each moment from --first-from to the earliest end of
    the last night is searched, and only ever by one shard (a shard may search its own
    again: the margin, whose repeats its journal skips)."""
    previous: list[int | None] = [None] * count
    searched: list[list[Span]] = [[] for _ in range(count)]
    for number, clocks in enumerate(nights):
        for index, (skew, missed) in enumerate(clocks[:count]):
            if missed and number < len(nights) - 1:
                continue
            now = MIDNIGHT + number * DAY + 150 * MINUTE + skew
            shard = Shard(index, count)
            resolved = resolve_range(NIGHTLY, now, previous[index], shard)
            previous[index] = resolved.time_range.to_ms
            searched[index] += spans(list(Slices(resolved.time_range, shard)))

    start, end = MIDNIGHT - 7 * DAY, min(p for p in previous if p is not None)
    union = merged([piece for pieces in searched for piece in pieces])
    assert any(low <= start and end <= high for low, high in union), union
    for one, other in combinations([merged(pieces) for pieces in searched], 2):
        assert not any(a < d and c < b for a, b in one for c, d in other)  # never two shards


def test_shards_started_in_one_hour_take_one_range_and_one_across_its_end_an_hour_more() -> None:
    """The only difference clocks make: a shard started after the hour's end ends its
    range an hour later, and its next night's run starts from there, as the others do
    from theirs."""
    ends = [
        resolve_range(NIGHTLY, MIDNIGHT + 2 * HOUR + offset, None, Shard(index, 3)).time_range
        for index, offset in enumerate((1, 59 * MINUTE, HOUR + 2 * MINUTE))
    ]
    assert ends[0] == ends[1] == TimeRange(MIDNIGHT - 7 * DAY, MIDNIGHT + 2 * HOUR)
    assert ends[2] == TimeRange(MIDNIGHT - 7 * DAY, MIDNIGHT + 3 * HOUR)
    tomorrow = MIDNIGHT + DAY + 2 * HOUR + 30 * MINUTE
    after = resolve_range(NIGHTLY, tomorrow, ends[2].to_ms, Shard(2, 3)).time_range
    assert after == TimeRange(MIDNIGHT + 3 * HOUR - LAST_MARGIN_MS, MIDNIGHT + DAY + 2 * HOUR)


def test_a_shard_takes_now_as_the_start_of_its_hour_and_says_so() -> None:
    now = MIDNIGHT + 2 * HOUR + 31 * MINUTE + 17
    options = QueryOptions("*", from_text=iso(MIDNIGHT - DAY), to_text="now-1h")

    resolved = resolve_range(options, now, None, Shard(1, 4))
    alone = resolve_range(options, now, None, None)

    assert resolved.time_range == TimeRange(MIDNIGHT - DAY, MIDNIGHT + HOUR)
    assert "shard 1/4 searches the hours of it numbered 1 mod 4" in resolved.why
    assert f"took now as {iso(MIDNIGHT + 2 * HOUR)}" in resolved.why
    assert alone.time_range.to_ms == now - HOUR  # a run alone keeps its own clock
    assert slice_start(now) == MIDNIGHT + 2 * HOUR == slice_start(MIDNIGHT + 2 * HOUR)


NOW = MIDNIGHT + 2 * HOUR + 30 * MINUTE
HOUR2 = MIDNIGHT + 2 * HOUR
"""The start of NOW's hour: the fixed times the refusals suggest are resolved from it."""
FIXED = iso(MIDNIGHT)


@pytest.mark.parametrize(
    ("from_text", "to_text", "first_from", "problem"),
    [
        ("now-1d", FIXED, None, f"--from now-1d with --shard: .* e.g. --from {iso(HOUR2 - DAY)}"),
        (FIXED, "now", None, rf"--to now \(the default\) with --shard.* e.g. --to {iso(HOUR2)}"),
        (FIXED, "now-2h", None, "--to now-2h with --shard.*or run nightly with --from last"),
        ("last", "now", "now-7d", f"--first-from now-7d with .* --first-from {iso(HOUR2 - WEEK)}"),
    ],
)
def test_a_sharded_range_whose_ends_could_differ_between_shards_is_refused(
    from_text: str, to_text: str, first_from: str | None, problem: str
) -> None:
    with pytest.raises(DateError, match=problem):
        check_sharded(from_text, to_text, first_from, NOW)


@pytest.mark.parametrize(
    ("from_text", "to_text", "first_from"),
    [
        (FIXED, iso(MIDNIGHT + DAY), None),
        ("last", "now", FIXED),
        ("last", "now-1h", None),
        ("last", str(MIDNIGHT + DAY), FIXED),
    ],
)
def test_a_sharded_range_all_shards_resolve_alike_or_catch_up_on_is_taken(
    from_text: str, to_text: str, first_from: str | None
) -> None:
    check_sharded(from_text, to_text, first_from, NOW)


def test_a_shards_search_is_filed_under_its_shard_and_a_run_alone_as_before() -> None:
    spec = QuerySpec("*", playlist_id=7, target="https://api.datadoghq.com")
    alone = query_key(spec, None)
    keys = {alone, query_key(spec, Shard(0, 2)), query_key(spec, Shard(1, 2))}
    keys.add(query_key(spec, Shard(0, 4)))

    assert alone == QueryKey(spec.effective_query, 7)  # the journals of before still serve
    assert len(keys) == 4  # another N is another search: it starts again from --first-from


def test_a_shards_first_night_without_first_from_is_told_a_fixed_one() -> None:
    """A first `--from last` run with no `--first-from` is told what to give; a shard is
    told a fixed time, since it refuses a relative one, and a run alone `now-7d`."""
    options = QueryOptions("*", from_text="last", to_text="now")
    with pytest.raises(DateError, match=rf"e\.g\. --first-from {iso(HOUR2 - WEEK)}\)"):
        resolve_range(options, NOW, None, Shard(0, 2))
    with pytest.raises(DateError, match=r"e\.g\. --first-from now-7d\)"):
        resolve_range(options, NOW, None, None)

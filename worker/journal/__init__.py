"""What the tool has already done, so reruns skip finished rows, repeats are sent once,
and a run can be undone.

`Ledger` is what the runner needs; `SqliteJournal` keeps it on disk, so a run that is
killed, or a cron job that reruns the same input, picks up where the last one stopped;
`NoJournalLedger` keeps it for one run only (`--no-journal`), in flat memory. `reading`
and `done_before` look at a journal without claiming it (status, dry runs, undo plans).
"""

from worker.journal.errors import JournalError
from worker.journal.history import CommonError, History, done_before, reading
from worker.journal.ledger import Ledger
from worker.journal.location import APP_NAME, JOURNAL_ENV, JOURNAL_FILE, default_journal_path
from worker.journal.recorder import BatchPolicy, SqliteJournal
from worker.journal.records import (
    CreatedRow,
    Operation,
    QueryKey,
    RunRecord,
    iso_time,
    new_run_id,
)
from worker.journal.repeats import NoJournalLedger, RepeatCheck
from worker.journal.schema import SCHEMA_VERSION, side_files

__all__ = [
    "APP_NAME",
    "JOURNAL_ENV",
    "JOURNAL_FILE",
    "SCHEMA_VERSION",
    "BatchPolicy",
    "CommonError",
    "CreatedRow",
    "History",
    "JournalError",
    "Ledger",
    "NoJournalLedger",
    "Operation",
    "QueryKey",
    "RepeatCheck",
    "RunRecord",
    "SqliteJournal",
    "default_journal_path",
    "done_before",
    "iso_time",
    "new_run_id",
    "reading",
    "side_files",
]

"""A command run on a pseudo-terminal, as a person at a terminal runs it.

The terminal is the command's controlling terminal (`/dev/tty`), as a shell makes it;
stdout and stderr are the terminal too (so the tool sees a TTY of the given size), or a
file (`> FILE 2>&1`); stdin is a pipe the test writes to when it chooses, so a test can
hold the input back until the first frame of the display is on screen, and so wait for
events, never for time.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import os
import pty
import re
import select
import struct
import subprocess
import termios
from collections.abc import Callable, Mapping, Sequence
from fcntl import ioctl
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SAFETY_NET_S = 60.0
"""How long a read waits for output before the test fails instead of hanging."""

_AMBIENT = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")


def plain(screen: str) -> str:
    """What the screen shows as text: escape sequences out, carriage returns as lines."""
    return ANSI.sub("", screen).replace("\r\n", "\n").replace("\r", "\n")


class Terminal:
    """`with Terminal(argv) as term:` starts `argv` on a fresh pseudo-terminal."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        columns: int = 120,
        env: Mapping[str, str] | None = None,
        stdin_pipe: bool = False,
        output: Path | None = None,
    ) -> None:
        """With `output`, stdout and stderr go to that file, not the terminal."""
        controller, terminal = pty.openpty()
        ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        base = {k: v for k, v in os.environ.items() if k not in _AMBIENT}
        base = {k: v for k, v in base.items() if not k.startswith(("DD_", "SANDBOX_"))}
        full_env = base | {"TERM": "xterm-256color", "PYTHONPATH": str(ROOT)} | dict(env or {})
        self._controller = controller
        with contextlib.ExitStack() as files:
            out = terminal if output is None else files.enter_context(output.open("wb"))
            self._child = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin_pipe else terminal,
                stdout=out,
                stderr=out,
                env=full_env,
                cwd=ROOT,
                # A session of its own, whose controlling terminal this is. The child
                # runs one C call before exec, taking no lock another thread could hold,
                # and keeps the terminal open, as a shell does, whatever its own streams
                # are: the screen ends when the command does.
                start_new_session=True,
                preexec_fn=functools.partial(ioctl, terminal, termios.TIOCSCTTY, 0),  # noqa: PLW1509
                pass_fds=(terminal,),
            )
        os.close(terminal)
        self.screen = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._closed = False

    def write_stdin(self, data: bytes, *, close: bool = False) -> None:
        stdin = self._child.stdin
        assert stdin is not None, "start with stdin_pipe=True"
        stdin.write(data)
        stdin.flush()
        if close:
            stdin.close()

    def read_until(self, shown: Callable[[str], bool]) -> str:
        """Read the screen until `shown(plain text so far)`; the screen so far."""
        while not shown(plain(self.screen)):
            if not self._read_some():
                raise AssertionError(f"the command ended first; screen:\n{self.screen}")
        return self.screen

    def finish(self) -> int:
        """Read the screen to the end; the exit status."""
        while self._read_some():
            pass
        return self._child.wait(SAFETY_NET_S)

    def _read_some(self) -> bool:
        if self._closed:
            return False
        ready, _, _ = select.select([self._controller], [], [], SAFETY_NET_S)
        if not ready:
            raise AssertionError(f"no output for {SAFETY_NET_S} s; screen:\n{self.screen}")
        try:
            chunk = os.read(self._controller, 65_536)
        except OSError:  # Linux reports the other side closed as EIO
            chunk = b""
        if not chunk:
            self._closed = True
            return False
        self.screen += self._decoder.decode(chunk)
        return True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._child.poll() is None:
            self._child.kill()
        self._child.wait()
        if self._child.stdin is not None and not self._child.stdin.closed:
            self._child.stdin.close()
        os.close(self._controller)

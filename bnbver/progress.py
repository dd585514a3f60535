"""Progress display for long commands: a bar on a terminal, plain lines otherwise.

:class:`Progress` counts finished items (instances, samples). On a terminal it redraws one
line (``desc [#####-----] 12/40 30% 0:01:02 eta 0:02:25 info``) at most every
``REDRAW_SECONDS``; when the stream is not a terminal (a log file, CI) it writes one plain
line per update that has an ``info`` text (``[12/40] desc: info``) so logs stay readable.
:func:`timed` shows the elapsed time against a time limit for commands that run one long
solve.

It writes to an explicit stream (stderr by default): results go to stdout or files, and the
display never mixes with them. A disabled display (``bnbver -q``) writes nothing. No tqdm: the
CLI needs these few lines only, and a dependency would be one more thing to install.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TextIO

#: Shortest time between two redraws of a terminal bar.
REDRAW_SECONDS = 0.1
#: Width of the bar in characters.
BAR_WIDTH = 24


def _clock(seconds: float) -> str:
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """Count finished items and show it (a stateful resource: use it in a ``with``).

    Args:
        total: the number of items (None: unknown, no bar).
        desc: a short label.
        stream: where to write (default ``sys.stderr``).
        enabled: False writes nothing.
    """

    def __init__(self, total: int | None, desc: str, stream: TextIO | None = None,
                 enabled: bool = True) -> None:
        self.total = total
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.info = ""
        self.started = time.monotonic()
        self._drawn = 0.0
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def update(self, n: int = 1, info: str = "") -> None:
        """Count ``n`` more finished items; ``info`` describes the latest."""
        self.done += n
        self.info = info
        if not self.enabled:
            return
        if not self.tty:
            if not info:
                return
            of = f"/{self.total}" if self.total is not None else ""
            self.stream.write(f"[{self.done}{of}] {self.desc}: {info}\n")
            self.stream.flush()
            return
        if time.monotonic() - self._drawn >= REDRAW_SECONDS or self.done == self.total:
            self.draw(self.render())

    def render(self) -> str:
        """Return the bar line for the current count."""
        elapsed = time.monotonic() - self.started
        if not self.total:
            return f"{self.desc} {self.done} {_clock(elapsed)} {self.info}"
        share = min(self.done / self.total, 1.0)
        fill = round(share * BAR_WIDTH)
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        return (f"{self.desc} [{'#' * fill}{'-' * (BAR_WIDTH - fill)}] {self.done}/"
                f"{self.total} {100 * share:3.0f}% {_clock(elapsed)} eta {_clock(eta)} "
                f"{self.info}")

    def draw(self, line: str) -> None:
        """Redraw the terminal line (padding out what a longer line left)."""
        if not self.tty:
            return
        self.stream.write("\r" + line + " " * max(self._width - len(line), 0))
        self.stream.flush()
        self._width = len(line)
        self._drawn = time.monotonic()

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


@contextmanager
def timed(desc: str, limit: float, stream: TextIO | None = None,
          enabled: bool = True) -> Iterator[Progress]:
    """Show elapsed time against ``limit`` seconds while the body runs.

    On a terminal a thread redraws the bar every half second; otherwise one line at the
    start and one at the end.
    """
    bar = Progress(None, desc, stream, enabled)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            elapsed = time.monotonic() - bar.started
            fill = round(min(elapsed / limit, 1.0) * BAR_WIDTH) if limit > 0 else 0
            bar.draw(f"{desc} [{'#' * fill}{'-' * (BAR_WIDTH - fill)}] {_clock(elapsed)} "
                     f"of {_clock(limit)}")

    if bar.enabled and not bar.tty:
        bar.stream.write(f"{desc}: started (time limit {limit:g} s)\n")
    thread = threading.Thread(target=tick, daemon=True) if bar.tty else None
    if thread is not None:
        thread.start()
    try:
        yield bar
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        bar.close()
        if bar.enabled and not bar.tty:
            bar.stream.write(f"{desc}: done in {time.monotonic() - bar.started:.1f} s\n")
            bar.stream.flush()

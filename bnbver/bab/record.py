"""Search-tree recording: one JSON line per bounded node, for plots and audits.

Each line: ``id``, ``parent``, ``depth``, ``split`` (the last decision), ``bound``,
``status`` (open / a closing method / counterexample), ``time`` (seconds since the start).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from bnbver.bab.node import Node


class TreeRecorder:
    """Append node records to a JSON-lines file; a no-op when ``path`` is None."""

    def __init__(self, path: str | Path | None) -> None:
        self._file: IO[str] | None = Path(path).open("w") if path else None  # noqa: SIM115

    def node(self, node: Node, parent: Node | None, status: str, seconds: float) -> None:
        """Record one bounded node."""
        if self._file is None:
            return
        last = node.splits.splits[-1] if len(node.splits) else None
        row = {"id": node.node_id, "parent": node.parent_id, "depth": node.depth,
               "split": None if last is None else [last.layer, last.unit, last.active],
               "bound": node.lower_bound, "status": status, "time": round(seconds, 6)}
        self._file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None

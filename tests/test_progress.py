"""The progress display: a redrawn bar on a terminal, plain lines otherwise, nothing if off."""

from __future__ import annotations

import io

from bnbver.progress import Progress, timed


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress(3, "certify", out) as bar:
        bar.update(info="sample 0: verified")
        bar.update()  # no info: counted, not written
        bar.update(info="sample 2: falsified")
    assert out.getvalue().splitlines() == ["[1/3] certify: sample 0: verified",
                                           "[3/3] certify: sample 2: falsified"]
    assert bar.done == 3


def test_terminal_bar_is_redrawn_on_one_line() -> None:
    out = _Terminal()
    with Progress(4, "run-suite", out) as bar:
        for i in range(4):
            bar.update(info=f"instance {i}")
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    last = text.rstrip("\n").split("\r")[-1]
    assert "run-suite [" + "#" * 24 + "] 4/4 100%" in last and "instance 3" in last


def test_disabled_writes_nothing() -> None:
    for out in (io.StringIO(), _Terminal()):
        with Progress(2, "x", out, enabled=False) as bar:
            bar.update(info="a")
        with timed("y", 1.0, out, enabled=False):
            pass
        assert out.getvalue() == ""


def test_timed_writes_a_start_and_an_end_line_off_a_terminal() -> None:
    out = io.StringIO()
    with timed("adversarial", 60.0, out):
        pass
    lines = out.getvalue().splitlines()
    assert lines[0] == "adversarial: started (time limit 60 s)"
    assert lines[1].startswith("adversarial: done in ")

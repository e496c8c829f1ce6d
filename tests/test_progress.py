"""Progress bars end their line in captured output, so the next log line starts on its own."""

from __future__ import annotations

import io

from rasa_meta.runtime.progress import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_leaves_a_finished_line_in_a_captured_stream():
    stream = io.StringIO()
    for _ in progress(range(3), desc="adapting encoder", file=stream):
        pass
    out = stream.getvalue()
    assert out.endswith("\n") and "adapting encoder" in out.splitlines()[-1]


def test_bar_stays_transient_in_a_terminal():
    stream = FakeTerminal()
    for _ in progress(range(3), desc="adapting encoder", file=stream):
        pass
    assert "adapting encoder" in stream.getvalue() and "\n" not in stream.getvalue()

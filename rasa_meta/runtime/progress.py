"""Progress bars that end their line in any stream.

A transient bar (``leave=False``) clears itself with a carriage return and no newline: fine in
a terminal, but in a captured log (``rasa train > train.log``, CI, a logging handler) the next
log line is glued to the bar's last state. Bars here stay transient in a terminal and leave
their final line, ended by a newline, everywhere else.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm`` whose ``leave`` defaults to "only where the stream is not a terminal"."""
    stream = kwargs.get("file") or sys.stderr
    kwargs.setdefault("leave", not _is_terminal(stream))
    return tqdm(iterable, **kwargs)

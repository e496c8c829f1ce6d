"""Dataclass fields that carry their command-line help: the ``rasa-meta`` flags are generated
from the dataclasses that hold the options (:func:`rasa_meta.tooling.cli.add_dataclass_arguments`),
so a flag cannot drift from the option it sets."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def arg(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with its help text and optional command-line details:

    ``choices``; ``flag`` (the flag's name when it is not the field's, e.g. ``"--threshold"``);
    ``nargs``, ``metavar`` or ``action`` (e.g. ``"append"``) passed to argparse; ``cli=False``
    for an option the command line does not set.
    """
    metadata = {"help": help, **cli}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)

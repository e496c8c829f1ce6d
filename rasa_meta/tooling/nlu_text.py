"""How the tools compare and write NLU example texts: one rule each, shared by every tool.

- :func:`normalise_text`: the key under which two texts are the same message or example.
  ``rasa-meta check-data`` flags examples of different intents with the same key as
  duplicates; ``rasa-meta inbox`` counts messages with the same key as repeats and leaves
  texts out of its draft whose key a training example already has.
- :func:`yaml_safe_example`: a text as one line of a Rasa NLU ``examples`` block that reads
  back as that text (entity annotations, as :data:`~rasa_meta.training.corpus.ENTITY_ANNOTATION`
  recognises them, are defused).
"""

from __future__ import annotations

from rasa_meta.training.corpus import ENTITY_ANNOTATION

# Characters ignored at either end of a text (after spaces are collapsed).
_STRIP = " \t\n.!?,;:"


def normalise_text(text: str) -> str:
    """Text as compared for identical messages or examples: case-folded, single spaces, no
    surrounding punctuation (``"Hi!"``, ``"hi"`` and ``" HI, "`` are the same text)."""
    return " ".join(str(text).casefold().split()).strip(_STRIP)


def yaml_safe_example(text: str) -> str:
    """One line a Rasa NLU examples block reads back as this text: no line breaks, and
    bracket pairs that Rasa would parse as an entity annotation turned into parentheses."""
    text = " ".join(text.split())
    # each pass turns at least one "[" into "(", so this ends; a second pass catches an
    # annotation that the first one's output reveals (``[a][b](c)``)
    while ENTITY_ANNOTATION.search(text):
        text = ENTITY_ANNOTATION.sub(
            lambda m: f"({m.group('text')}) {_defused(m.group('annotation'))}", text)
    return text


def _defused(annotation: str) -> str:
    """A list-of-entities annotation ``[...]`` in parentheses; ``(...)`` and ``{...}`` as they
    are (nothing reads them without the bracketed text before them)."""
    return f"({annotation[1:-1]})" if annotation.startswith("[") else annotation

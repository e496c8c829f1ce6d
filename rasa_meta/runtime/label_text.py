"""Intent names and descriptions as text: what the bot already says about each intent.

An intent's name (``check_order_status``, ``CardArrival``, ``faq/ask_hours``) or its
description (Rasa NLU YAML: ``metadata: {description: ...}`` on the intent) is embedded like
an example and counts towards the intent's prototype with the weight ``label_name_weight``
(see :class:`~rasa_meta.runtime.heads.PrototypeHead`). Names that carry no words
(``intent_17``, ``IN:X``) give no text, so they cannot pull a prototype anywhere.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence

# Words that say nothing about what a message means, whatever the bot.
GENERIC_WORDS = frozenset({"intent", "label", "class", "utter", "nlu"})
# Parse-tree prefixes (TOP: ``IN:GET_EVENT``) are markup, not words.
_PREFIX = re.compile(r"^(?:IN|SL):")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[_\-/.:+]+|\s+")


def name_text(label: str) -> str:
    """The words of an intent name: separators and camel case split, lower case, digits and
    generic words (``intent``, ``label``) dropped; "" when no word is left.

    >>> name_text("check_order_status"), name_text("AddToPlaylist"), name_text("faq/ask_hours")
    ('check order status', 'add to playlist', 'faq ask hours')
    >>> name_text("intent_17")
    ''
    """
    words = []
    for part in _SEPARATORS.split(_PREFIX.sub("", label)):
        for word in _CAMEL.split(part):
            word = word.lower()
            if word and not word.isdigit() and word not in GENERIC_WORDS:
                words.append(word)
    return " ".join(words)


def label_texts(
    labels: Sequence[str], descriptions: Optional[Mapping[str, str]] = None
) -> Dict[str, str]:
    """Each label's text: its description where one is given, else its name's words; labels
    with neither are left out."""
    descriptions = descriptions or {}
    out = {}
    for label in labels:
        text = (descriptions.get(label) or "").strip() or name_text(label)
        if text:
            out[label] = text
    return out

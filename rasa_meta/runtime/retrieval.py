"""Retrieval intents (``faq/ask_hours``): learnt per response key, reported per intent.

A retrieval intent such as ``faq`` is many unrelated questions; one prototype for all of them
is the mean of unrelated sentences. The model therefore learns each response key as its own
label, and the intent's probability is the sum over its keys (the keys partition it).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

DELIMITER = "/"  # Rasa's RESPONSE_IDENTIFIER_DELIMITER


def intent_of(label: str) -> str:
    """``faq/ask_hours`` -> ``faq``; an ordinary intent is its own."""
    return label.split(DELIMITER, 1)[0]


def is_response_key(label: str) -> bool:
    return DELIMITER in label


def intent_scores(labels: Sequence[str], scores: Sequence[float]) -> List[Tuple[str, float]]:
    """Per-intent scores, response keys summed into their retrieval intent, best first (ties
    keep the labels' order)."""
    totals: Dict[str, float] = {}
    for label, score in zip(labels, scores):
        name = intent_of(label)
        totals[name] = totals.get(name, 0.0) + float(score)
    return sorted(totals.items(), key=lambda kv: -kv[1])  # stable: ties keep their order


def response_key_scores(
    labels: Sequence[str], scores: Sequence[float]
) -> List[Tuple[str, float]]:
    """The response keys among ``labels`` with their scores, best first."""
    keys = [(label, float(s)) for label, s in zip(labels, scores) if is_response_key(label)]
    return sorted(keys, key=lambda kv: -kv[1])

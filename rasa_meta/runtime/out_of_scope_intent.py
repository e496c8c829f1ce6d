"""A bot's own out-of-scope intent: what its examples add to the in-scope score.

Many bots have an intent such as ``out_of_scope`` whose examples are messages the bot does not
handle, answered by a rule ("Sorry, I can't help with that"). Counted as one more intent, its
diverse examples widen the bot's leave-one-out spread (everything looks more in scope), its
probability counts as in-scope mass, and a message unlike every intent falls back to
``nlu_fallback`` although the bot has an intent for exactly that message.

With ``out_of_scope_intent`` set, the labels of that intent (the intent itself and its
retrieval response keys, ``out_of_scope/...``) are the out-of-scope labels, and:

- the in-scope score (learned or similarity) is computed and calibrated over the in-scope
  intents only: :func:`in_scope_part` is the head it reads;
- in-scope probability = p_in · (1 − m), m the head's probability mass on the out-of-scope
  labels; each in-scope intent's confidence is its confidence over the in-scope intents times
  (1 − m), so their ranking is unchanged;
- the out-of-scope labels get the rest, 1 − Σ in-scope confidences, split in proportion to
  their head probabilities (:func:`with_out_of_scope_labels`).

Off by default (``out_of_scope_intent: null``): measured on two real bots and CLINC150 it
answers far more out-of-scope messages with the bot's own intent, but at a fixed threshold it
also sends more in-scope messages there (docs/results/out_of_scope/README.md).

This module is the one home of that arithmetic; :class:`~rasa_meta.runtime.in_scope.
InScopeEstimator` applies it at prediction, and the held-out calibration of the inner loop
(``training/adapt.py``) scores against :func:`in_scope_part` too.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from rasa_meta.runtime.heads import MatchingHead, PrototypeHead
from rasa_meta.runtime.retrieval import DELIMITER

# Below this, a probability mass counts as zero (float32 softmax underflow).
_TINY = 1e-30


def out_of_scope_labels(labels: Sequence[str], intent: Optional[str]) -> List[str]:
    """The labels of ``intent`` among ``labels``: the intent and its response keys
    (``out_of_scope/other``). Empty when ``intent`` is unset, or when nothing else is left in
    scope (a bot of out-of-scope examples only has no in-scope intents to score)."""
    if not intent:
        return []
    found = [lab for lab in labels if lab == intent or lab.startswith(intent + DELIMITER)]
    return found if len(found) < len(labels) else []


def in_scope_part(head: PrototypeHead, oos_labels: Sequence[str]) -> PrototypeHead:
    """``head`` over the in-scope labels only (``head`` itself when there are no out-of-scope
    labels): their examples, name support, prototypes and refined vectors, in the same order.

    A matching head stays a matching head (its similarities are nearest examples); any other
    head becomes a prototype head over its examples that keeps the head's ``kind``, so that
    what branches on it (the learned score's features, leave-one-out) reads it as before."""
    if not oos_labels:
        return head
    dropped = set(oos_labels)
    keep = [i for i, label in enumerate(head.labels) if label not in dropped]
    position = torch.full((len(head.labels),), -1, dtype=torch.long)
    position[keep] = torch.arange(len(keep))
    rows = position[head.support_targets] >= 0
    part = MatchingHead(head.temperature) if head.kind == "matching" else PrototypeHead(
        head.temperature)
    if part.kind != head.kind:
        part.kind = head.kind
    part.labels = [head.labels[i] for i in keep]
    part.support = head.support[rows]
    part.support_targets = position[head.support_targets[rows]]
    index = torch.tensor(keep, dtype=torch.long)
    if head.label_support is not None:
        part.label_support = head.label_support[index]
    part.label_weight = head.label_weight
    part.prototypes = head.prototypes[index]
    weights = getattr(head, "weights", None)
    if head.kind == "prototype" and weights is not None:
        part.weights = weights[index]
    return part


def split_indices(labels: Sequence[str], oos_labels: Sequence[str]) -> Tuple[List[int], List[int]]:
    """(in-scope, out-of-scope) column indices of ``labels``."""
    dropped = set(oos_labels)
    return ([i for i, lab in enumerate(labels) if lab not in dropped],
            [i for i, lab in enumerate(labels) if lab in dropped])


def in_scope_probabilities(probs: torch.Tensor, in_idx: Sequence[int]) -> Tuple[torch.Tensor,
                                                                                  torch.Tensor]:
    """(p(intent | not an out-of-scope label) over the in-scope columns, 1 − m): the head's
    distribution renormalised over the in-scope intents, and the mass it had there."""
    part = probs[:, list(in_idx)]
    mass = part.sum(1)
    return part / mass.clamp(min=_TINY).unsqueeze(1), mass


def with_out_of_scope_labels(
    in_confidences: torch.Tensor,
    in_score: torch.Tensor,
    in_mass: torch.Tensor,
    probs: torch.Tensor,
    in_idx: Sequence[int],
    oos_idx: Sequence[int],
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The full rows and the in-scope probability, from the in-scope score of the in-scope
    intents alone (``in_confidences`` (n, in-scope intents), ``in_score`` (n,)) and ``in_mass``
    = 1 − m, the head's mass outside the out-of-scope labels.

    In-scope confidences and probability are scaled by 1 − m; the out-of-scope labels share
    1 − Σ in-scope confidences in proportion to their head probabilities (evenly where the
    head gives them none). The learned score's confidences are P(right) for the top intent and
    the same ratio for the others, so on an ambiguous message they can sum past 1: then the
    out-of-scope labels get 0, and FallbackClassifier's thresholds decide as without them."""
    scale = in_mass.unsqueeze(1)
    inside = in_confidences * scale
    rest = (1.0 - inside.sum(1)).clamp(min=0.0)
    oos = probs[:, list(oos_idx)]
    oos_mass = oos.sum(1, keepdim=True)
    share = torch.where(oos_mass > _TINY, oos / oos_mass.clamp(min=_TINY),
                        torch.full_like(oos, 1.0 / max(len(oos_idx), 1)))
    out = probs.new_zeros(probs.shape)
    out[:, list(in_idx)] = inside
    out[:, list(oos_idx)] = share * rest.unsqueeze(1)
    return out, in_score * in_mass

"""Out-of-scope scoring from the bot's own in-scope examples only.

How close a message must be to an intent to count as in scope is read off the training data:
each example's leave-one-out similarity to its own intent (its prototype rebuilt without it,
or its nearest other example for the matching head). A message as similar as the typical
example is fully in scope; one as similar as the ``quantile``-th least typical example is at
the midpoint (in-scope probability 0.5); below that the probability falls linearly to 0.
Because the scale comes from each bot's own spread, the same FallbackClassifier threshold
means the same thing for 5 intents or 150.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import PrototypeHead


def leave_one_out_similarities(head: PrototypeHead) -> torch.Tensor:
    """Similarity of each example (of intents with 2+ examples) to its own intent without it."""
    emb, targets = head.support, head.support_targets
    counts = torch.bincount(targets, minlength=len(head.labels))
    keep = counts[targets] >= 2
    if not bool(keep.any()):
        return torch.zeros(0)
    if head.kind == "matching":
        sims = emb @ emb.T
        same = (targets.unsqueeze(0) == targets.unsqueeze(1)) & ~torch.eye(len(targets), dtype=bool)
        loo = sims.masked_fill(~same, -2.0).max(1).values
    else:
        sums = torch.zeros(len(head.labels), emb.shape[1]).index_add_(0, targets, emb)
        loo = (emb * F.normalize(sums[targets] - emb, dim=-1)).sum(1)
    return loo[keep]


@dataclass
class InScopeCalibrator:
    """Maps a message's best similarity to an intent to an in-scope probability in [0, 1]."""

    low: float = -1.0
    high: float = -1.0
    enabled: bool = False

    @classmethod
    def fit(cls, head: PrototypeHead, quantile: float = 0.05) -> InScopeCalibrator:
        loo = leave_one_out_similarities(head)
        if loo.numel() < 2:
            return cls()  # nothing to learn the spread from: everything counts as in scope
        high = float(torch.quantile(loo, 0.5))
        mid = float(torch.quantile(loo, quantile))
        low = 2 * mid - high
        if high - low < 1e-4:
            low = high - 1e-4
        return cls(low, high, True)

    def __call__(self, best_similarity: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return torch.ones_like(best_similarity)
        return ((best_similarity - self.low) / (self.high - self.low)).clamp(0.0, 1.0)

    def to_dict(self) -> Dict[str, float]:
        return {"low": self.low, "high": self.high, "enabled": self.enabled}

    @classmethod
    def from_dict(cls, data: Dict) -> InScopeCalibrator:
        return cls(float(data["low"]), float(data["high"]), bool(data["enabled"]))

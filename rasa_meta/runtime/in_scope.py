"""In-scope scoring: how likely a message is one of the bot's intents, and predicted right.

Two scores, both from the bot's own examples only (no out-of-scope data is needed):

- ``similarity`` (the rule used before a scorer was learned): a message's best cosine to an
  intent, scaled by the bot's leave-one-out spread (``SimilarityCalibrator``).
- ``learned`` (the default): ``InScopeScorer``, a monotone logistic model over features every
  bot has (best and second-best similarity, nearest example, the head's top probability, the
  bot's own leave-one-out statistics, number of intents and shots). It is meta-trained across
  many episodes in which some intents are held out as pseudo out-of-scope queries
  (``rasa_meta.training.in_scope``), so a new bot gets it without any OOS data. Its target is
  "in scope and the top intent is right", so its output reads as the probability that the
  prediction is correct: the same threshold means the same thing for 5 intents or 150.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import PrototypeHead
from rasa_meta.runtime.out_of_scope_intent import (
    in_scope_part,
    in_scope_probabilities,
    out_of_scope_labels,
    split_indices,
    with_out_of_scope_labels,
)
from rasa_meta.runtime.traffic_share import IN_SCOPE_MAP, RIGHT_MAP, right_logit

SCORER_FILE = "in_scope_scorer.json"

# Features of a message against a fitted head. The first MONOTONE ones grow with how close the
# message is to the bot's intents; their weights are kept non-negative, so moving a message
# closer to its intent never lowers its score.
FEATURES = (
    "top_similarity",  # cosine to the nearest prototype
    "margin",  # that minus the second-nearest prototype's
    "nearest_example",  # cosine to the nearest single example
    "top_probability",  # the head's softmax probability of its top intent
    "relative_similarity",  # top_similarity minus the bot's typical leave-one-out similarity
    "typical_similarity",  # the bot's median leave-one-out similarity (context)
    "spread",  # median minus 5th percentile of leave-one-out similarity (context)
    "log_intents",  # log of the number of intents (context)
    "log_shots",  # log of the mean examples per intent (context)
)
MONOTONE = 5


def leave_one_out_similarities(head: PrototypeHead) -> torch.Tensor:
    """Similarity of each example (of intents with 2+ examples) to its own intent without it."""
    counts = torch.bincount(head.support_targets, minlength=len(head.labels))
    keep = counts[head.support_targets] >= 2
    if not bool(keep.any()):
        return torch.zeros(0)
    return _own_intent_without_self(head)[keep]


def _own_intent_without_self(head: PrototypeHead) -> torch.Tensor:
    """Every example's similarity to its own intent with itself left out: the rebuilt
    prototype, or (matching head) the nearest other example of the intent (-2 if none)."""
    emb, targets = head.support, head.support_targets
    if head.kind == "matching":
        sims = emb @ emb.T
        same = (targets.unsqueeze(0) == targets.unsqueeze(1)) & ~torch.eye(len(targets), dtype=bool)
        return sims.masked_fill(~same, -2.0).max(1).values
    sums = head.class_sums()
    return (emb * F.normalize(sums[targets] - emb, dim=-1)).sum(1)


@dataclass
class BotStatistics:
    """What the scorer knows about a bot: its leave-one-out spread, intents and shots."""

    typical: float
    low: float
    n_intents: int
    mean_shots: float

    @classmethod
    def of(cls, head: PrototypeHead) -> BotStatistics:
        loo = leave_one_out_similarities(head)
        if loo.numel() >= 2:
            typical, low = float(torch.quantile(loo, 0.5)), float(torch.quantile(loo, 0.05))
        else:  # one example per intent: no spread to read, assume a tight one
            typical, low = 1.0, 1.0
        n = max(len(head.labels), 1)
        return cls(typical, low, n, len(head.support_targets) / n)


def prototype_view(head: PrototypeHead) -> PrototypeHead:
    """The head the learned in-scope score reads: ``head`` itself if it is a prototype head,
    else plain prototypes over its examples (what the scorer was trained on)."""
    if head.kind == "prototype":
        return head
    view = PrototypeHead(head.temperature)
    view.labels, view.support = head.labels, head.support
    view.support_targets, view.prototypes = head.support_targets, head.prototypes
    view.label_support, view.label_weight = head.label_support, head.label_weight
    return view


def in_scope_features(
    head: PrototypeHead,
    emb: torch.Tensor,
    stats: Optional[BotStatistics] = None,
    sims: Optional[torch.Tensor] = None,
    probs: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """(n, len(FEATURES)) features of each query embedding against a fitted head
    (``sims`` and ``probs``: the head's outputs for ``emb``, if already computed).

    The features are those of the prototype head over the same examples, whatever the head:
    the scorer was trained on them and the leave-one-out calibration measures them, so a
    matching head's nearest-example similarities (higher than any prototype's) would make
    every message look in scope."""
    if head.kind != "prototype":
        head, sims, probs = prototype_view(head), None, None
    stats = stats or BotStatistics.of(head)
    sims = head.similarities(emb) if sims is None else sims
    top2 = sims.topk(min(2, sims.shape[1]), dim=1).values
    top = top2[:, 0]
    second = top2[:, 1] if top2.shape[1] > 1 else top - 1.0
    nearest = (emb.float() @ head.support.T).max(1).values
    probability = (head.predict_proba(emb) if probs is None else probs).max(1).values
    return _feature_matrix(top, second, nearest, probability, stats)


def _feature_matrix(
    top: torch.Tensor,
    second: torch.Tensor,
    nearest: torch.Tensor,
    probability: torch.Tensor,
    stats: BotStatistics,
) -> torch.Tensor:
    """Stack per-message similarities and the bot's context into FEATURES order."""
    context = torch.tensor(
        [stats.typical, stats.typical - stats.low, math.log(stats.n_intents),
         math.log(max(stats.mean_shots, 1.0))]
    ).expand(len(top), 4)
    per_message = torch.stack([top, top - second, nearest, probability, top - stats.typical], 1)
    return torch.cat([per_message, context], 1)


def leave_one_out_features(head: PrototypeHead, stats: BotStatistics) -> torch.Tensor:
    """The features of each training example (of intents with 2+ examples) as if it were a
    new message: its own intent's prototype rebuilt without it, its nearest *other* example,
    probabilities from those similarities. How the bot's own examples score calibrates it."""
    emb, targets = head.support, head.support_targets
    counts = torch.bincount(targets, minlength=len(head.labels))
    keep = counts[targets] >= 2
    if not bool(keep.any()) or len(head.labels) < 2:
        return torch.zeros(0, len(FEATURES))
    sims = emb @ head.prototypes.T
    loo = _own_intent_without_self(head)
    sims = sims.scatter(1, targets.unsqueeze(1), loo.unsqueeze(1))
    pair = (emb @ emb.T).fill_diagonal_(-2.0)
    top2 = sims.topk(2, dim=1).values
    probability = torch.softmax(sims / head.temperature, dim=1).max(1).values
    feats = _feature_matrix(top2[:, 0], top2[:, 1], pair.max(1).values, probability, stats)
    return feats[keep]


@dataclass
class InScopeScorer:
    """Monotone logistic model: features → probability that the top intent is right."""

    weights: List[float]
    bias: float
    mean: List[float]
    scale: List[float]
    features: List[str] = field(default_factory=lambda: list(FEATURES))
    trained_on: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if list(self.features) != list(FEATURES):
            raise ValueError(
                f"in-scope scorer was trained on features {self.features}, this version "
                f"computes {list(FEATURES)}"
            )

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - torch.tensor(self.mean)) / torch.tensor(self.scale)
        return x @ torch.tensor(self.weights) + self.bias

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(features))

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict) -> InScopeScorer:
        return cls(
            [float(w) for w in data["weights"]], float(data["bias"]),
            [float(m) for m in data["mean"]], [float(s) for s in data["scale"]],
            list(data.get("features", FEATURES)), dict(data.get("trained_on", {})),
        )

    def save(self, directory: Union[str, Path]) -> None:
        (Path(directory) / SCORER_FILE).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, directory: Union[str, Path]) -> Optional[InScopeScorer]:
        """The scorer shipped with an encoder directory, or None if it has none."""
        path = Path(directory) / SCORER_FILE
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text()))


@dataclass
class SimilarityCalibrator:
    """Maps a message's best similarity to an intent to an in-scope probability in [0, 1].

    A message as similar as the bot's typical example (median leave-one-out similarity) is
    fully in scope; one as similar as the ``quantile``-th least typical example is at 0.5;
    below that the probability falls linearly to 0.
    """

    low: float = -1.0
    high: float = -1.0
    enabled: bool = False

    @classmethod
    def fit(
        cls,
        head: PrototypeHead,
        quantile: float = 0.05,
        similarities: Optional[torch.Tensor] = None,
    ) -> SimilarityCalibrator:
        """``similarities``: held-out examples' similarity to their intent (default: the
        head's examples, leave-one-out)."""
        use_held_out = similarities is not None and similarities.numel() >= 2
        loo = similarities if use_held_out else leave_one_out_similarities(head)
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
    def from_dict(cls, data: Dict) -> SimilarityCalibrator:
        return cls(float(data["low"]), float(data["high"]), bool(data["enabled"]))


OOS_METHODS = ("learned", "similarity")


@dataclass
class HeldOutScores:
    """Examples scored by a model adapted without them: what new in-scope messages look like.

    When the inner loop fine-tunes the encoder on the bot's examples, the encoder has seen
    every example that leave-one-out scoring treats as new; held-out examples are scored the
    way new messages are, at the cost of a second inner loop. ``features`` are the held-out
    examples' scorer features against the head built from the rest; ``similarities`` their
    cosine to their own intent.
    """

    features: torch.Tensor
    similarities: torch.Tensor

    @classmethod
    def of(
        cls, head: PrototypeHead, embeddings: torch.Tensor, labels: Sequence[str]
    ) -> HeldOutScores:
        """Score held-out ``embeddings`` (of intents ``head`` knows) against ``head``."""
        index = {label: i for i, label in enumerate(head.labels)}
        keep = [i for i, label in enumerate(labels) if label in index]
        if not keep:
            return cls(torch.zeros(0, len(FEATURES)), torch.zeros(0))
        emb = embeddings[keep].float()
        targets = torch.tensor([index[labels[i]] for i in keep])
        sims = head.similarities(emb)
        own = sims.gather(1, targets.unsqueeze(1)).squeeze(1)
        return cls(in_scope_features(head, emb, sims=sims), own)


@dataclass
class InScopeEstimator:
    """A bot's in-scope score, as configured by ``out_of_scope_detection``.

    ``learned``: the meta-trained scorer with this bot's statistics; the top intent's
    confidence becomes the probability that it is right for traffic with
    ``out_of_scope_share`` out of scope (:mod:`rasa_meta.runtime.traffic_share`; the other
    intents keep their ratio to it). ``similarity``: the leave-one-out rule. ``off``: every
    message is in scope.

    ``out_of_scope_labels``: the bot's out-of-scope intent and its response keys
    (:mod:`rasa_meta.runtime.out_of_scope_intent`): the score and its calibration read the
    other intents only, and those labels take the probability of being out of scope.
    """

    method: str = "off"
    calibrator: SimilarityCalibrator = field(default_factory=SimilarityCalibrator)
    scorer: Optional[InScopeScorer] = None
    stats: Optional[BotStatistics] = None
    offset: float = 0.0  # added to the scorer's logit: the bot's own calibration
    # None: a model saved before the share existed, whose confidence is sigmoid(logit).
    out_of_scope_share: Optional[float] = None
    right_map: Tuple[float, float] = RIGHT_MAP
    in_scope_map: Tuple[float, float] = IN_SCOPE_MAP
    # Empty: no out-of-scope intent (a model saved before the option, or a bot without one).
    out_of_scope_labels: List[str] = field(default_factory=list)
    # (head, its in-scope part): built once per fitted head, not per request
    _part: Optional[Tuple[PrototypeHead, PrototypeHead]] = field(
        default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(
        cls,
        head: PrototypeHead,
        method: str,
        quantile: float = 0.05,
        scorer: Optional[InScopeScorer] = None,
        held_out: Optional[HeldOutScores] = None,
        out_of_scope_share: Optional[float] = None,
        out_of_scope_intent: Optional[str] = None,
    ) -> InScopeEstimator:
        """``held_out``: how examples the encoder was not adapted on score; without it the
        head's own examples are scored leave-one-out (right when the encoder is frozen).
        ``out_of_scope_share``: the traffic the learned confidence is a probability for.
        ``out_of_scope_intent``: the bot's intent for out-of-scope messages, if it has one;
        the statistics and calibration are then those of the other intents
        (``held_out`` must have been scored against them too)."""
        oos = out_of_scope_labels(head.labels, out_of_scope_intent)
        fitted = cls._fit(in_scope_part(head, oos), method, quantile, scorer, held_out,
                          out_of_scope_share)
        fitted.out_of_scope_labels = oos
        return fitted

    @classmethod
    def _fit(
        cls,
        head: PrototypeHead,
        method: str,
        quantile: float,
        scorer: Optional[InScopeScorer],
        held_out: Optional[HeldOutScores],
        out_of_scope_share: Optional[float],
    ) -> InScopeEstimator:
        if method == "learned":
            if scorer is None:
                raise ValueError("the learned in-scope score needs a scorer")
            head = prototype_view(head)  # the features the scorer reads, whatever the head
            stats = BotStatistics.of(head)
            # The scorer ranks; the bot's own examples set the scale: the ``quantile``-th least
            # typical example (scored as if it were new) lands at 0.5, as with the similarity
            # rule, so a threshold means the same for a clean 150-intent bot or a noisy one.
            if held_out is not None and held_out.features.numel():
                loo = scorer.logits(held_out.features)
            else:
                loo = scorer.logits(leave_one_out_features(head, stats))
            offset = -float(torch.quantile(loo, quantile)) if loo.numel() >= 2 else 0.0
            return cls("learned", scorer=scorer, stats=stats, offset=offset,
                       out_of_scope_share=out_of_scope_share)
        if method == "similarity":
            sims = held_out.similarities if held_out is not None else None
            return cls("similarity", calibrator=SimilarityCalibrator.fit(head, quantile, sims))
        return cls()

    def in_scope_head(self, head: PrototypeHead) -> PrototypeHead:
        """The part of ``head`` the score reads: its in-scope intents (all, without an
        out-of-scope intent)."""
        if not self.out_of_scope_labels:
            return head
        if self._part is None or self._part[0] is not head:
            self._part = (head, in_scope_part(head, self.out_of_scope_labels))
        return self._part[1]

    def confidences(
        self, head: PrototypeHead, emb: torch.Tensor, probs: torch.Tensor, sims: torch.Tensor
    ) -> tuple:
        """(confidences (n, labels), in-scope score (n,)) from the head's outputs."""
        if not self.out_of_scope_labels:
            return self._confidences(head, emb, probs, sims)
        in_idx, oos_idx = split_indices(head.labels, self.out_of_scope_labels)
        in_probs, in_mass = in_scope_probabilities(probs, in_idx)
        inside, score = self._confidences(self.in_scope_head(head), emb, in_probs,
                                          sims[:, in_idx])
        return with_out_of_scope_labels(inside, score, in_mass, probs, in_idx, oos_idx)

    def _confidences(
        self, head: PrototypeHead, emb: torch.Tensor, probs: torch.Tensor, sims: torch.Tensor
    ) -> tuple:
        if self.method == "learned" and self.scorer is not None:
            z = self._logits(head, emb, probs, sims)
            if self.out_of_scope_share is None:
                score = torch.sigmoid(z)
            else:
                score = torch.sigmoid(right_logit(z, self.out_of_scope_share, self.right_map))
            top = probs.max(1).values.clamp(min=1e-12)
            return (probs * (score / top).unsqueeze(1)).clamp(max=1.0), score
        score = self.calibrator(sims.max(1).values)
        return probs * score.unsqueeze(1), score

    def logits(
        self, head: PrototypeHead, emb: torch.Tensor, probs: torch.Tensor, sims: torch.Tensor
    ) -> torch.Tensor:
        """The learned score's logit z of each message, anchored on the bot's examples: what
        the confidence and the traffic share estimate are computed from. With an
        out-of-scope intent, z reads the in-scope intents only."""
        if self.scorer is None:
            raise RuntimeError("logits() needs the learned in-scope score (method 'learned').")
        if self.out_of_scope_labels:
            in_idx, _ = split_indices(head.labels, self.out_of_scope_labels)
            probs = in_scope_probabilities(probs, in_idx)[0]
            head, sims = self.in_scope_head(head), sims[:, in_idx]
        return self._logits(head, emb, probs, sims)

    def _logits(
        self, head: PrototypeHead, emb: torch.Tensor, probs: torch.Tensor, sims: torch.Tensor
    ) -> torch.Tensor:
        features = in_scope_features(head, emb, self.stats, sims, probs)
        return self.scorer.logits(features) + self.offset

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {"method": self.method}
        if self.method == "learned":
            out["scorer"] = self.scorer.to_dict() if self.scorer else None
            out["statistics"] = asdict(self.stats) if self.stats else None
            out["offset"] = self.offset
            if self.out_of_scope_share is not None:
                out["out_of_scope_share"] = self.out_of_scope_share
                out["right_map"] = list(self.right_map)
                out["in_scope_map"] = list(self.in_scope_map)
        else:
            out["calibrator"] = self.calibrator.to_dict()
        if self.out_of_scope_labels:  # absent: none (what older models hold)
            out["out_of_scope_labels"] = list(self.out_of_scope_labels)
        return out

    @classmethod
    def from_dict(cls, data: Dict) -> InScopeEstimator:
        estimator = cls._from_dict(data)
        estimator.out_of_scope_labels = [str(lab) for lab in data.get("out_of_scope_labels", [])]
        return estimator

    @classmethod
    def _from_dict(cls, data: Dict) -> InScopeEstimator:
        method = str(data["method"])
        if method == "learned":
            s = data["statistics"]
            stats = BotStatistics(float(s["typical"]), float(s["low"]), int(s["n_intents"]),
                                  float(s["mean_shots"]))
            share = data.get("out_of_scope_share")
            return cls("learned", scorer=InScopeScorer.from_dict(data["scorer"]), stats=stats,
                       offset=float(data.get("offset", 0.0)),
                       out_of_scope_share=None if share is None else float(share),
                       right_map=_pair(data.get("right_map"), RIGHT_MAP),
                       in_scope_map=_pair(data.get("in_scope_map"), IN_SCOPE_MAP))
        if method not in ("similarity", "off"):
            raise ValueError(f"unknown in-scope method '{method}'")
        return cls(method, calibrator=SimilarityCalibrator.from_dict(data["calibrator"]))


def _pair(value: object, default: Tuple[float, float]) -> Tuple[float, float]:
    """A saved (slope, intercept) map, or ``default`` for a model saved without one."""
    if value is None:
        return default
    slope, intercept = value  # type: ignore[misc]
    return float(slope), float(intercept)

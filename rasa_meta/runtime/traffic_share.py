"""The top intent's confidence as P(answer is right) for traffic with a given out-of-scope share.

The in-scope scorer (:mod:`rasa_meta.runtime.in_scope`) gives each message a logit ``z``,
anchored on the bot's own examples. Two fixed logistic maps, fitted once on the *valid* splits
of held-out corpora with as many in-scope as out-of-scope messages
(``scripts/traffic_share.py``, ``docs/results/traffic_share/traffic_share.json``), turn it
into probabilities at an even mix:

- ``P(right | z)``: the message is in scope and the top intent is the right one;
- ``P(in scope | z)``.

Traffic whose share of out-of-scope messages is ``share`` shifts both by the prior odds
(Bayes' rule with the likelihoods unchanged): ``logit + log((1 - share) / share)``. So the
confidence means the same on every bot, and a FallbackClassifier threshold of 0.5 is right
where a wrong answer costs as much as a needless fallback.

The share itself can be estimated from a bot's unlabelled traffic: the EM re-estimation of the
prior of Saerens et al. (2002) on ``P(in scope | z)``, with a bootstrap interval. Everything
here is plain arithmetic on the logits, shared by the component, ``rasa-meta calibrate``, the
inbox and the evidence scripts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np
import torch

# Real customer-service traffic is a third to two thirds out of scope (36-69 % on three live
# bots). The default has the least loss against the best threshold over the 30-70 % valid
# mixes of CLINC150 and BANKING77-OOS, scored with encoders that never saw them
# (docs/results/traffic_share/traffic_share.json, "default_share_choice").
DEFAULT_OUT_OF_SCOPE_SHARE = 0.45
# (slope, intercept) of the maps from the scorer logit z, at an even in-scope / OOS mix, chosen
# on the same valid mixes (docs/results/traffic_share/traffic_share.json, "maps").
# RIGHT_MAP: logistic regression of
# "in scope and the top intent right". IN_SCOPE_MAP: the least error of the share estimate; a
# logistic fit pooled over corpora is flatter than any one corpus's, and EM on flat posteriors
# counts part of the in-scope messages as out of scope.
RIGHT_MAP = (1.128625583198024, -1.911168113680833)
IN_SCOPE_MAP = (5.0, -5.5)
# Shares are kept off 0 and 1: the log-odds of a certain prior are infinite.
MIN_SHARE, MAX_SHARE = 0.005, 0.995

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


def clip_share(share: float) -> float:
    return min(max(float(share), MIN_SHARE), MAX_SHARE)


def prior_log_odds(share: float) -> float:
    """log((1 - share) / share): what traffic with this OOS share adds to an even-mix logit."""
    share = clip_share(share)
    return math.log((1.0 - share) / share)


def right_logit(z: torch.Tensor, share: float, right_map: Tuple[float, float] = RIGHT_MAP
                ) -> torch.Tensor:
    """Logit of P(top intent right) for traffic with out-of-scope ``share``."""
    slope, intercept = right_map
    return slope * z + intercept + prior_log_odds(share)


def in_scope_probability(z: ArrayLike, in_scope_map: Tuple[float, float] = IN_SCOPE_MAP
                         ) -> np.ndarray:
    """P(in scope | z) at an even mix: the posterior the share estimate re-weights."""
    slope, intercept = in_scope_map
    z = np.asarray(z, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-(slope * z + intercept)))


def estimate_share(in_scope_even: ArrayLike, iterations: int = 500, tol: float = 1e-7) -> float:
    """Out-of-scope share of unlabelled messages: EM on the prior (Saerens et al. 2002).

    ``in_scope_even``: P(in scope | message) for an even mix. Each step re-weights the
    posteriors by the current prior against the even one and averages them.
    """
    p = np.clip(np.asarray(in_scope_even, dtype=np.float64), 1e-9, 1 - 1e-9)
    if p.size == 0:
        raise ValueError("no messages to estimate the out-of-scope share from")
    share = 0.5
    for _ in range(iterations):
        out = share * (1 - p)
        posterior_out = out / (out + (1 - share) * p)
        new = float(posterior_out.mean())
        if abs(new - share) < tol:
            share = new
            break
        share = new
    return share


@dataclass
class ShareEstimate:
    """An estimated out-of-scope share with its bootstrap interval."""

    share: float
    low: float
    high: float
    messages: int
    level: float

    def to_dict(self) -> dict:
        return {"out_of_scope_share": self.share, "interval": [self.low, self.high],
                "interval_level": self.level, "messages": self.messages}


def estimate_share_interval(
    in_scope_even: ArrayLike, draws: int = 200, level: float = 0.95, seed: int = 0
) -> ShareEstimate:
    """The EM share and a percentile bootstrap interval over the messages."""
    p = np.asarray(in_scope_even, dtype=np.float64)
    share = estimate_share(p)
    rng = np.random.default_rng(seed)
    boots = [estimate_share(p[rng.integers(0, len(p), len(p))]) for _ in range(draws)]
    tail = (1 - level) / 2
    low, high = np.quantile(boots, [tail, 1 - tail]) if boots else (share, share)
    return ShareEstimate(share, float(low), float(high), int(len(p)), level)


def decision_threshold(cost_wrong: float = 1.0) -> float:
    """P(right) above which answering costs less than falling back, when a wrong answer costs
    ``cost_wrong`` times a needless fallback: cost_wrong / (1 + cost_wrong)."""
    if not cost_wrong > 0:
        raise ValueError(f"the cost of a wrong answer must be positive, got {cost_wrong!r}")
    return cost_wrong / (1.0 + cost_wrong)


def fallback_threshold(share: float, configured_share: float, cost_wrong: float = 1.0) -> float:
    """The FallbackClassifier threshold for traffic with out-of-scope ``share``, on a model
    whose confidences assume ``configured_share``: no retraining, only the prior moves.

    Confidence c = sigmoid(L + prior_log_odds(configured)); the right probability for the
    traffic is sigmoid(L + prior_log_odds(share)); answering when that exceeds
    decision_threshold(cost_wrong) is answering when c exceeds the value returned.
    """
    t = decision_threshold(cost_wrong)
    logit = math.log(t / (1 - t)) - prior_log_odds(share) + prior_log_odds(configured_share)
    return 1.0 / (1.0 + math.exp(-logit))

"""The traffic-share math: prior shift, the label-free share estimate, the threshold for a share,
and editing config.yml's FallbackClassifier threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rasa_meta.runtime.heads import make_head
from rasa_meta.runtime.in_scope import InScopeEstimator, InScopeScorer
from rasa_meta.runtime.model import FewShotConfig
from rasa_meta.runtime.traffic_share import (
    decision_threshold,
    estimate_share,
    estimate_share_interval,
    fallback_threshold,
    prior_log_odds,
    right_logit,
)
from rasa_meta.tooling.calibrate import CalibrationError, set_fallback_threshold

# --- constructed traffic ---------------------------------------------------------------------
# In-scope logits z ~ N(+m, 1), out-of-scope ~ N(-m, 1): the exact even-mix posterior is
# P(in | z) = sigmoid(2 m z), and P(in | z) for a share s is sigmoid(2 m z + log((1-s)/s)).
M = 1.5


def traffic(share: float, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_oos = int(round(share * n))
    z = np.concatenate([rng.normal(M, 1, n - n_oos), rng.normal(-M, 1, n_oos)])
    oos = np.concatenate([np.zeros(n - n_oos, bool), np.ones(n_oos, bool)])
    return z, oos


def even_posterior(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-2 * M * z))


@pytest.mark.parametrize("share", [0.1, 0.3, 0.5, 0.7])
def test_the_share_estimate_recovers_a_known_share(share):
    z, _ = traffic(share, 4000, seed=int(100 * share))
    assert estimate_share(even_posterior(z)) == pytest.approx(share, abs=0.03)


def test_the_interval_holds_the_share_and_narrows_with_more_messages():
    small = estimate_share_interval(even_posterior(traffic(0.4, 300, seed=1)[0]), draws=100)
    large = estimate_share_interval(even_posterior(traffic(0.4, 5000, seed=2)[0]), draws=100)
    for estimate in (small, large):
        assert estimate.low <= estimate.share <= estimate.high
        assert estimate.low <= 0.4 <= estimate.high
    assert (large.high - large.low) < (small.high - small.low)
    assert small.messages == 300


def test_no_messages_is_an_error():
    with pytest.raises(ValueError):
        estimate_share([])


def accuracy(answered, oos):
    """In-scope answers are all right here: right = answered in-scope or fallen-back OOS."""
    return float(np.mean(np.where(oos, ~answered, answered)))


@pytest.mark.parametrize("share,configured", [(0.2, 0.5), (0.6, 0.5), (0.7, 0.3)])
def test_the_threshold_for_a_share_is_the_best_one_on_that_traffic(share, configured):
    z, oos = traffic(share, 20000, seed=3)
    # the model's confidence assumes ``configured``; the traffic has ``share``
    conf = torch.sigmoid(right_logit(torch.tensor(z), configured, (2 * M, 0.0))).numpy()
    t = fallback_threshold(share, configured)
    # the optimum of the constructed set: the Bayes rule, answer where P(in | z) > 1/2,
    # i.e. z above log(share / (1 - share)) / (2 m)
    z_star = math.log(share / (1 - share)) / (2 * M)
    assert (conf >= t).tolist() == (z >= z_star).tolist()
    grid = np.linspace(0.01, 0.99, 99)
    best = max(accuracy(conf >= g, oos) for g in grid)
    assert accuracy(conf >= t, oos) >= best - 0.002
    # keeping the configured share's 0.5 loses accuracy when the shares differ
    assert accuracy(conf >= 0.5, oos) < accuracy(conf >= t, oos)


def test_threshold_moves_with_share_and_cost():
    assert fallback_threshold(0.5, 0.5) == pytest.approx(0.5)
    assert fallback_threshold(0.3, 0.3) == pytest.approx(0.5)
    assert fallback_threshold(0.7, 0.5) > 0.5 > fallback_threshold(0.2, 0.5)
    assert decision_threshold(3.0) == pytest.approx(0.75)
    assert fallback_threshold(0.5, 0.5, cost_wrong=3.0) == pytest.approx(0.75)
    assert fallback_threshold(0.6, 0.5, 3.0) > fallback_threshold(0.6, 0.5, 1.0)
    with pytest.raises(ValueError):
        decision_threshold(0.0)
    assert prior_log_odds(0.0) == pytest.approx(-prior_log_odds(1.0))  # clipped, finite


# --- the component's confidence --------------------------------------------------------------


def fitted_estimator(share):
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(12, 8), dim=-1)
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    head = make_head("prototype", 0.05).fit(emb, labels)
    scorer = InScopeScorer([0.5] * 5 + [0.0] * 4, 0.0, [0.0] * 9, [1.0] * 9)
    return head, InScopeEstimator.fit(head, "learned", scorer=scorer, out_of_scope_share=share)


def test_a_higher_share_lowers_confidence_and_keeps_the_ranking():
    head, low = fitted_estimator(0.1)
    _, high = fitted_estimator(0.7)
    queries = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    probs, sims = head.predict_proba(queries), head.similarities(queries)
    c_low, _ = low.confidences(head, queries, probs, sims)
    c_high, _ = high.confidences(head, queries, probs, sims)
    assert (c_high.max(1).values < c_low.max(1).values).all()
    assert c_high.argmax(1).tolist() == c_low.argmax(1).tolist() == probs.argmax(1).tolist()
    z = low.logits(head, queries, probs, sims)
    expected = torch.sigmoid(right_logit(z, 0.7, high.right_map))
    assert torch.allclose(c_high.max(1).values, expected, atol=1e-6)


def test_the_share_is_saved_and_a_model_without_one_keeps_its_old_confidence():
    head, estimator = fitted_estimator(0.45)
    restored = InScopeEstimator.from_dict(estimator.to_dict())
    assert restored.out_of_scope_share == pytest.approx(0.45)
    assert restored.right_map == pytest.approx(estimator.right_map)
    old = estimator.to_dict()
    for key in ("out_of_scope_share", "right_map", "in_scope_map"):
        old.pop(key)
    legacy = InScopeEstimator.from_dict(old)
    assert legacy.out_of_scope_share is None
    queries = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    probs, sims = head.predict_proba(queries), head.similarities(queries)
    conf, _ = legacy.confidences(head, queries, probs, sims)
    z = legacy.logits(head, queries, probs, sims)
    assert torch.allclose(conf.max(1).values, torch.sigmoid(z), atol=1e-6)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "half", None, True])
def test_the_share_option_is_validated(bad):
    with pytest.raises(ValueError, match="out_of_scope_share"):
        FewShotConfig(out_of_scope_share=bad).validate(check_encoder=False)


# --- config.yml --------------------------------------------------------------------------------

CONFIG = """\
# my bot
recipe: default.v1
language: en
pipeline:
  - name: WhitespaceTokenizer   # threshold: 0.9 in a comment elsewhere
  - name: rasa_meta.MetaIntentClassifier
    out_of_scope_share: 0.5
  - name: FallbackClassifier
    threshold: 0.4   # set by calibrate
    ambiguity_threshold: 0.05
policies:
  - name: RulePolicy
    core_fallback_threshold: 0.3
"""


def changed_lines(before: str, after: str):
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


def test_write_changes_only_the_threshold_line():
    after = set_fallback_threshold(CONFIG, 0.63)
    assert changed_lines(CONFIG, after) == [
        ("    threshold: 0.4   # set by calibrate\n", "    threshold: 0.63   # set by calibrate\n")
    ]


def test_write_adds_a_missing_threshold_and_edits_flow_style():
    text = CONFIG.replace("    threshold: 0.4   # set by calibrate\n", "")
    after = set_fallback_threshold(text, 0.7)
    assert after.replace("    threshold: 0.70\n", "", 1) == text
    assert "  - name: FallbackClassifier\n    threshold: 0.70\n" in after
    flow = ("pipeline:\n- name: rasa_meta.MetaIntentClassifier\n"
            "- {name: FallbackClassifier, threshold: 0.4}\n")
    assert set_fallback_threshold(flow, 0.55).splitlines()[2] == (
        "- {name: FallbackClassifier, threshold: 0.55}")
    crlf = CONFIG.replace("\n", "\r\n")
    assert len(changed_lines(crlf, set_fallback_threshold(crlf, 0.6))) == 1


def test_write_without_a_fallback_classifier_is_an_error():
    with pytest.raises(CalibrationError, match="no FallbackClassifier"):
        set_fallback_threshold("pipeline:\n  - name: rasa_meta.MetaIntentClassifier\n", 0.5)


def test_the_shipped_maps_and_default_share_are_the_ones_chosen_on_valid():
    import json

    from rasa_meta.runtime import traffic_share
    from tests.conftest import REPO

    evidence = json.loads(
        (REPO / "docs" / "results" / "traffic_share" / "traffic_share.json").read_text())
    assert traffic_share.RIGHT_MAP == pytest.approx(tuple(evidence["maps"]["right"]))
    assert traffic_share.IN_SCOPE_MAP == pytest.approx(tuple(evidence["maps"]["in_scope"]))
    assert traffic_share.DEFAULT_OUT_OF_SCOPE_SHARE == pytest.approx(evidence["default_share"])
    assert FewShotConfig().out_of_scope_share == traffic_share.DEFAULT_OUT_OF_SCOPE_SHARE

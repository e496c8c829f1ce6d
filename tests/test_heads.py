"""Prototype and matching heads on hand-made unit vectors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import MatchingHead, PrototypeHead, make_head

SUPPORT = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
LABELS = ["a", "a", "b", "b"]


def test_prototypes_are_normalised_class_means():
    head = PrototypeHead(temperature=0.1).fit(SUPPORT, LABELS)
    assert head.labels == ["a", "b"]
    expected_a = F.normalize(torch.tensor([1.8, 0.6]), dim=0)
    assert torch.allclose(head.prototypes[0], expected_a)


def test_prototype_probabilities_match_hand_computation():
    head = PrototypeHead(temperature=0.5).fit(SUPPORT, LABELS)
    q = torch.tensor([[1.0, 0.0]])
    sims = head.similarities(q)[0]
    pa = math.exp(sims[0] / 0.5) / (math.exp(sims[0] / 0.5) + math.exp(sims[1] / 0.5))
    probs = head.predict_proba(q)[0]
    assert abs(float(probs[0]) - pa) < 1e-5
    assert abs(float(probs.sum()) - 1.0) < 1e-6


def test_matching_head_is_attention_mass_per_class():
    head = MatchingHead(temperature=0.5).fit(SUPPORT, LABELS)
    q = torch.tensor([[0.0, 1.0]])
    att = torch.softmax(q @ SUPPORT.T / 0.5, dim=-1)[0]
    probs = head.predict_proba(q)[0]
    assert torch.allclose(probs, torch.stack([att[:2].sum(), att[2:].sum()]), atol=1e-6)
    # similarity to a class = its nearest example
    assert torch.allclose(head.similarities(q)[0], torch.tensor([0.6, 1.0]))


def test_matching_keeps_a_two_cluster_intent_that_a_mean_blurs():
    # intent "a" has two far-apart phrasings, so its mean points between them, near "b"
    support = F.normalize(
        torch.tensor([[1.0, 0.2], [-1.0, 0.2], [-0.5, 0.87], [-0.6, 0.8]]), dim=1
    )
    labels = ["a", "a", "b", "b"]
    query = F.normalize(torch.tensor([[-0.98, 0.2]]), dim=1)
    assert PrototypeHead(0.1).fit(support, labels).predict_proba(query).argmax() == 1
    assert MatchingHead(0.1).fit(support, labels).predict_proba(query).argmax() == 0


def test_state_round_trip():
    head = make_head("matching", 0.2).fit(SUPPORT, LABELS)
    again = make_head("matching", 0.2).load_state(head.labels, head.state_dict())
    q = torch.randn(3, 2)
    assert torch.allclose(head.predict_proba(q), again.predict_proba(q))


def test_refine_fixes_a_prototype_error_on_the_support_set():
    # "a" has a stray example near "b": its mean drifts toward "b" and misclassifies it
    support = F.normalize(
        torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.2, 1.0], [0.0, 1.0], [0.1, 1.0], [-0.2, 1.0]]),
        dim=1,
    )
    labels = ["a", "a", "a", "b", "b", "b"]
    head = PrototypeHead(0.05).fit(support, labels)
    before = head.predict_proba(support).argmax(1)
    refined = PrototypeHead(0.05).fit(support, labels).refine(steps=200, learning_rate=0.05)
    after = refined.predict_proba(support).argmax(1)
    targets = head.support_targets
    assert (after == targets).sum() > (before == targets).sum()
    # similarities (out-of-scope, explanations) stay on the prototypes
    assert torch.equal(refined.similarities(support), head.similarities(support))
    again = PrototypeHead(0.05).load_state(refined.labels, refined.state_dict())
    assert torch.allclose(again.predict_proba(support), refined.predict_proba(support))


def test_refine_is_deterministic_and_skips_single_class():
    a = PrototypeHead(0.1).fit(SUPPORT, LABELS).refine(50)
    b = PrototypeHead(0.1).fit(SUPPORT, LABELS).refine(50)
    assert torch.equal(a.weights, b.weights)
    single = PrototypeHead(0.1).fit(SUPPORT, ["a"] * 4).refine(50)
    assert single.weights is None


def test_unfitted_model_says_what_to_do():
    from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel

    model = FewShotIntentModel(FewShotConfig(epochs=0))
    for call in (lambda: model.predict(["hi"]), lambda: model.save("/nonexistent"),
                 lambda: model.nearest_examples(torch.zeros(4), "greet", 1)):
        with pytest.raises(RuntimeError, match="needs a fitted model"):
            call()

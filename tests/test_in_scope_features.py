"""The in-scope score sees the same features whatever the head, as its calibration assumes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import MatchingHead, PrototypeHead
from rasa_meta.runtime.in_scope import in_scope_features


def _data():
    gen = torch.Generator().manual_seed(0)
    support = F.normalize(torch.randn(12, 8, generator=gen), dim=-1)
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    queries = F.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    return support, labels, queries


def test_matching_head_features_are_the_prototype_features_of_its_examples():
    support, labels, queries = _data()
    matching = MatchingHead(0.1).fit(support, labels)
    prototype = PrototypeHead(0.1).fit(support, labels)
    # serving passes the head's own similarities and probabilities; the features must still
    # be the prototype ones that the scorer and the leave-one-out calibration are made of
    served = in_scope_features(matching, queries, sims=matching.similarities(queries),
                               probs=matching.predict_proba(queries))
    assert torch.allclose(served, in_scope_features(prototype, queries), atol=1e-6)
    assert torch.allclose(in_scope_features(matching, queries),
                          in_scope_features(prototype, queries), atol=1e-6)


def test_a_refined_prototype_head_keeps_its_own_probabilities():
    support, labels, queries = _data()
    refined = PrototypeHead(0.1).fit(support, labels).refine(50, 0.05)
    plain = PrototypeHead(0.1).fit(support, labels)
    # the probability feature (index 3) comes from the refined head, as before
    assert not torch.allclose(in_scope_features(refined, queries)[:, 3],
                              in_scope_features(plain, queries)[:, 3])


def test_learned_calibration_of_a_matching_head_is_that_of_its_prototypes():
    from rasa_meta.runtime.in_scope import FEATURES, InScopeEstimator, InScopeScorer

    support, labels, queries = _data()
    n = len(FEATURES)
    scorer = InScopeScorer([1.0] * n, 0.0, [0.0] * n, [1.0] * n)
    fitted = {
        kind: InScopeEstimator.fit(head, "learned", 0.05, scorer)
        for kind, head in (("matching", MatchingHead(0.1).fit(support, labels)),
                           ("prototype", PrototypeHead(0.1).fit(support, labels)))
    }
    assert fitted["matching"].stats == fitted["prototype"].stats
    assert abs(fitted["matching"].offset - fitted["prototype"].offset) < 1e-6

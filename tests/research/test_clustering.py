"""The clustering study's score (``research/clustering.py``): how well clusters recover known
groups."""

from __future__ import annotations

import pytest

from research.clustering import score_groups


def test_score_groups_needs_a_pure_cluster():
    # group "a": 8 of its 10 messages in cluster 0 with 3 others (73 % pure): that cluster
    # does not count; the best pure one is a singleton holding 1 of 10
    ids = [0] * 11 + [1, 2]
    groups = ["a"] * 8 + [None] * 3 + ["a", "a"]
    assert score_groups(ids, groups).coverage["a"] == pytest.approx(0.1)
    # with 2 others it is 80 % pure and holds 8 of the 10
    score = score_groups(ids[1:], groups[:8] + [None] * 2 + ["a", "a"])
    assert score.coverage["a"] == pytest.approx(0.8)
    assert score.purity["a"] == pytest.approx(0.8)
    assert score.recovered(0.8) == 1.0 and score.recovered(0.9) == 0.0


def test_messages_of_no_group_are_not_scored_and_an_unrecovered_group_scores_zero():
    score = score_groups([0, 0, 1, 2, 2], [None, None, "a", "b", None])
    assert sorted(score.coverage) == ["a", "b"]
    assert score.coverage["a"] == 1.0 and score.clusters["a"] == 1
    assert score.coverage["b"] == 0.0 and score.clusters["b"] == -1  # cluster 2 is 50 % "b"
    assert score.mean_coverage == pytest.approx(0.5) and score.recovered() == 0.5
    assert score_groups([0, 1], [None, None]).mean_coverage == 0.0

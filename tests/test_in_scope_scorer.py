"""The meta-learned in-scope scorer: features, training, monotonicity, persistence through
Rasa, and the threshold tool."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import PrototypeHead
from rasa_meta.runtime.in_scope import (
    FEATURES,
    MONOTONE,
    BotStatistics,
    InScopeEstimator,
    InScopeScorer,
    in_scope_features,
    leave_one_out_features,
)
from rasa_meta.runtime.model import FewShotConfig
from rasa_meta.tooling.oos_eval import ScoredSplit
from rasa_meta.training.adapt import adapt
from rasa_meta.training.in_scope import fit_scorer, sample_scorer_episode, scorer_quality

DIM = 16


def _cluster_corpus(n_intents: int, per_intent: int, gen: torch.Generator, spread=0.25) -> dict:
    """Intents as tight clusters of unit vectors around random centres."""
    out = {}
    for i in range(n_intents):
        centre = F.normalize(torch.randn(DIM, generator=gen), dim=0)
        pts = centre + spread * torch.randn(per_intent, DIM, generator=gen) / DIM ** 0.5
        out[f"intent_{i}"] = F.normalize(pts, dim=-1)
    return out


@pytest.fixture(scope="module")
def toy_corpora() -> dict:
    gen = torch.Generator().manual_seed(0)
    return {f"corpus_{c}": _cluster_corpus(12, 12, gen) for c in range(3)}


@pytest.fixture(scope="module")
def toy_episodes(toy_corpora):
    rng = random.Random(0)
    config = FewShotConfig(epochs=0, head_steps=10)
    episodes = []
    while len(episodes) < 60:
        ep = sample_scorer_episode(toy_corpora, rng, config, temperature=0.05, shots=(3, 5))
        if ep is not None:
            episodes.append(ep)
    return episodes


@pytest.fixture(scope="module")
def trained(toy_episodes):
    return fit_scorer(toy_episodes[10:], steps=300)


def test_episodes_hold_in_scope_and_pseudo_out_of_scope_queries(toy_episodes):
    ep = toy_episodes[0]
    assert ep.features.shape[1] == len(FEATURES)
    assert ep.in_scope.any() and (~ep.in_scope).any()
    assert not bool(ep.correct[~ep.in_scope].any())  # out-of-scope is never "right"


def test_training_lowers_the_loss_and_ranks_held_out_episodes(trained, toy_episodes):
    scorer, losses = trained
    assert losses[-1] < 0.8 * losses[0]
    quality = scorer_quality(scorer, toy_episodes[:10])
    assert quality["auroc"] > 0.9


def test_monotone_weights_stay_non_negative_even_against_the_data(toy_episodes):
    flipped = [type(ep)(ep.features, 1.0 - ep.correct, ep.in_scope) for ep in toy_episodes]
    scorer, _ = fit_scorer(flipped, steps=200)
    assert min(scorer.weights[:MONOTONE]) >= 0.0


def test_far_messages_score_low_near_ones_high_and_closer_never_lowers(trained, toy_corpora):
    scorer, _ = trained
    corpus = toy_corpora["corpus_0"]
    names = sorted(corpus)[:6]
    support = torch.cat([corpus[n][:5] for n in names])
    head = PrototypeHead(0.05).fit(support, [n for n in names for _ in range(5)])
    head.refine(10)
    estimator = InScopeEstimator.fit(head, "learned", 0.05, scorer)
    near = corpus[names[0]][6:10]  # unseen examples of a known intent
    far = toy_corpora["corpus_2"]["intent_3"][:4]  # another corpus's intent
    probs, sims = head.predict_proba(near), head.similarities(near)
    _, near_scores = estimator.confidences(head, near, probs, sims)
    _, far_scores = estimator.confidences(
        head, far, head.predict_proba(far), head.similarities(far))
    assert float(near_scores.min()) > float(far_scores.max())
    assert float(near_scores.mean()) > 0.5 > float(far_scores.mean())
    # walk a far message towards the first intent's prototype: its score never drops
    path = [F.normalize((1 - a) * far[0] + a * head.prototypes[0], dim=0) for a in
            np.linspace(0, 1, 11)]
    walk = torch.stack(path)
    features = in_scope_features(head, walk, BotStatistics.of(head))
    scores = scorer(features).tolist()
    assert all(b >= a - 1e-6 for a, b in zip(scores, scores[1:])), scores


def test_leave_one_out_features_treat_each_example_as_new(toy_corpora):
    corpus = toy_corpora["corpus_1"]
    names = sorted(corpus)[:4]
    support = torch.cat([corpus[n][:4] for n in names])
    head = PrototypeHead(0.05).fit(support, [n for n in names for _ in range(4)])
    stats = BotStatistics.of(head)
    loo = leave_one_out_features(head, stats)
    seen = in_scope_features(head, support, stats)
    assert loo.shape == seen.shape
    # without itself, an example is less similar to its intent and to its nearest example
    assert bool((loo[:, 0] <= seen[:, 0] + 1e-6).all())
    assert bool((loo[:, 2] < seen[:, 2]).all())


def test_scorer_and_estimator_round_trip(trained, toy_corpora, tmp_path):
    scorer, _ = trained
    scorer.save(tmp_path)
    again = InScopeScorer.load(tmp_path)
    x = torch.randn(5, len(FEATURES))
    assert torch.equal(scorer(x), again(x))
    assert InScopeScorer.load(tmp_path / "nowhere") is None
    corpus = toy_corpora["corpus_0"]
    names = sorted(corpus)[:3]
    head = PrototypeHead(0.05).fit(torch.cat([corpus[n][:4] for n in names]),
                                   [n for n in names for _ in range(4)])
    est = InScopeEstimator.fit(head, "learned", 0.05, scorer)
    assert InScopeEstimator.from_dict(est.to_dict()) == est


def test_scorer_rejects_features_it_was_not_trained_on(trained):
    data = trained[0].to_dict()
    data["features"] = list(reversed(data["features"]))
    with pytest.raises(ValueError, match="features"):
        InScopeScorer.from_dict(data)


def test_threshold_tool_finds_the_known_optimum():
    from rasa_meta.tooling.threshold import recommend, sweep

    # in-scope: 8 right at 0.9, 1 right at 0.3, 1 wrong at 0.2; OOS: 0.1 x 5, 0.5 x 5
    in_scope = ScoredSplit(np.array([0.9] * 8 + [0.3, 0.2]), ["a"] * 10, ["a"] * 9 + ["b"])
    oos = ScoredSplit(np.array([0.1] * 5 + [0.5] * 5), ["a"] * 10, [None] * 10)
    # no in-scope loss allowed: anything in (0.1, 0.3] keeps the 9 right ones and rejects the
    # five at 0.1; the middle of that range is recommended
    best = recommend(in_scope, oos, max_in_scope_drop=0.0)
    assert (best.in_scope_accuracy, best.oos_recall) == (0.9, 0.5)
    assert (best.tied_from, best.tied_to) == (0.1, 0.3) and best.threshold == pytest.approx(0.2)
    # 10 points may go: anything in (0.5, 0.9] rejects every OOS message at 80 % in-scope
    best = recommend(in_scope, oos, max_in_scope_drop=0.1)
    assert (best.in_scope_accuracy, best.oos_recall) == (0.8, 1.0)
    assert (best.tied_from, best.tied_to) == (0.5, 0.9) and best.threshold == pytest.approx(0.7)
    points = sweep(in_scope, oos, steps=11)
    assert [p.threshold for p in points][:2] == [0.0, 0.1]
    assert points[0].oos_recall == 0.0 and points[-1].in_scope_accuracy == 0.0


def test_threshold_tool_recommends_the_middle_of_a_tie():
    from rasa_meta.tooling.threshold import recommend

    # perfectly separated: every threshold in (0.07, 0.76] is right for every message; the
    # lowest such value would sit right next to the OOS messages
    in_scope = ScoredSplit(np.array([0.76, 0.9, 0.95]), ["a", "b", "a"], ["a", "b", "a"])
    oos = ScoredSplit(np.array([0.02, 0.07]), ["a", "a"], [None, None])
    best = recommend(in_scope, oos, max_in_scope_drop=None)
    assert (best.in_scope_accuracy, best.oos_recall) == (1.0, 1.0)
    assert (best.tied_from, best.tied_to) == (0.07, 0.76)
    assert best.threshold == pytest.approx((0.07 + 0.76) / 2)


def _write_scorer(encoder_dir, tmp_path, trained):
    target = tmp_path / "encoder-with-scorer"
    shutil.copytree(encoder_dir, target)
    trained[0].save(target)
    return target


def test_learned_scores_persist_through_rasa(tiny_encoder_dir, tmp_path, trained):
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from rasa_meta.component import MetaIntentClassifier
    from tests.conftest import toy_corpus
    from tests.rasa_helpers import context, load, new_storage, parse

    encoder = _write_scorer(tiny_encoder_dir, tmp_path, trained)
    config = {**MetaIntentClassifier.get_default_config(), "encoder": str(encoder),
              "epochs": 0, "out_of_scope_detection": "learned"}
    storage = new_storage(tmp_path / "storage")
    clf = MetaIntentClassifier.create(config, storage, Resource("clf"), context())
    texts, labels = toy_corpus()
    clf.train(TrainingData([Message(data={"text": t, "intent": i})
                            for t, i in zip(texts, labels)]))
    assert clf.model.in_scope.method == "learned"
    queries = ["where is my parcel", "zzz qqq 123", "hello there friend"]
    before = [m.get("intent_ranking") for m in parse(clf, queries)]
    after = [m.get("intent_ranking") for m in parse(load(config, storage), queries)]
    assert before == after
    top = before[0][0]
    assert isinstance(top["confidence"], float) and 0.0 <= top["confidence"] <= 1.0


def test_learned_without_a_scorer_is_a_config_error(tiny_encoder_dir, tmp_path):
    from rasa.engine.storage.resource import Resource
    from rasa.shared.exceptions import InvalidConfigException
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from rasa_meta.component import MetaIntentClassifier
    from tests.conftest import toy_corpus
    from tests.rasa_helpers import context, new_storage

    config = {**MetaIntentClassifier.get_default_config(), "encoder": str(tiny_encoder_dir),
              "epochs": 0, "out_of_scope_detection": "learned"}
    clf = MetaIntentClassifier.create(config, new_storage(tmp_path), Resource("c"), context())
    texts, labels = toy_corpus()
    with pytest.raises(InvalidConfigException, match="train-scorer"):
        clf.train(TrainingData([Message(data={"text": t, "intent": i})
                                for t, i in zip(texts, labels)]))
    with pytest.raises(InvalidConfigException, match="out_of_scope_detection"):
        MetaIntentClassifier.validate_config({**config, "out_of_scope_detection": "maybe"})


def test_a_scorer_beside_the_weights_leaves_the_encoder_fingerprint_alone(
    tiny_encoder_dir, tmp_path, trained
):
    from rasa_meta.runtime.encoder import compute_encoder_fingerprint

    target = tmp_path / "enc"
    shutil.copytree(tiny_encoder_dir, target)
    before = compute_encoder_fingerprint(str(target))
    trained[0].save(target)
    (target / "in_scope_scorer_history.json").write_text("{}")
    assert compute_encoder_fingerprint(str(target)) == before
    (target / "config.json").write_text((target / "config.json").read_text() + " ")
    assert compute_encoder_fingerprint(str(target)) != before  # the weights' side still counts


# --- calibration on held-out examples when the inner loop adapts the encoder ---------------


def test_held_out_split_takes_one_example_of_each_intent_that_has_two():
    from rasa_meta.training.adapt import held_out_split

    labels = ["a", "a", "a", "b", "b", "c"]
    held = held_out_split(labels, seed=3)
    assert held == held_out_split(labels, seed=3)  # seeded
    assert sorted(labels[i] for i in held) == ["a", "b"]  # "c" has a single example
    assert len(set(held)) == 2


def test_held_out_scores_treat_examples_as_new_and_set_the_scale(trained, toy_corpora):
    from rasa_meta.runtime.in_scope import HeldOutScores, SimilarityCalibrator

    corpus = toy_corpora["corpus_2"]
    names = sorted(corpus)[:4]
    head = PrototypeHead(0.05).fit(torch.cat([corpus[n][:4] for n in names]),
                                   [n for n in names for _ in range(4)])
    new = torch.cat([corpus[n][4:6] for n in names])
    new_labels = [n for n in names for _ in range(2)]
    held = HeldOutScores.of(head, torch.cat([new, corpus[sorted(corpus)[5]][:2]]),
                            new_labels + ["not_an_intent"] * 2)
    assert held.features.shape == (len(new), len(FEATURES))  # unknown intents are skipped
    own = head.similarities(new).gather(
        1, torch.tensor([names.index(n) for n in new_labels]).unsqueeze(1)).squeeze(1)
    assert torch.allclose(held.similarities, own)
    scorer = trained[0]
    est = InScopeEstimator.fit(head, "learned", 0.2, scorer, held)
    # the held-out examples' 20 % quantile lands at 0.5, not the leave-one-out one
    expected = -float(torch.quantile(scorer.logits(held.features), 0.2))
    assert est.offset == pytest.approx(expected)
    assert est.offset != pytest.approx(InScopeEstimator.fit(head, "learned", 0.2, scorer).offset)
    cal = SimilarityCalibrator.fit(head, 0.2, held.similarities)
    assert cal.high == pytest.approx(float(torch.quantile(held.similarities, 0.5)))


def test_held_out_calibration_leaves_the_adapted_model_as_it_is(tiny_encoder_dir, tmp_path,
                                                                 trained):
    from rasa_meta.runtime.model import FewShotIntentModel
    from tests.conftest import toy_corpus

    encoder = _write_scorer(tiny_encoder_dir, tmp_path, trained)
    texts, labels = toy_corpus()
    queries = ["where is my parcel", "zzz qqq 123", "hello there friend"]
    fitted = {}
    for calibration in ("held_out", "leave_one_out"):
        config = FewShotConfig(encoder=str(encoder), epochs=2, head_steps=5, device="cpu",
                               out_of_scope_detection="learned", oos_calibration=calibration)
        model = adapt(FewShotIntentModel(config), texts, labels)
        fitted[calibration] = (model, *model.predict(queries))
    held, loo = fitted["held_out"], fitted["leave_one_out"]
    # the copy adapted without the held-out examples is thrown away: the same encoder change
    # and the same prototypes, only the in-scope scale differs
    assert held[0].delta.keys() == loo[0].delta.keys() and held[0].delta
    assert all(torch.equal(held[0].delta[k], loo[0].delta[k]) for k in held[0].delta)
    assert torch.equal(held[0].head.prototypes, loo[0].head.prototypes)
    assert torch.equal(held[3], loo[3])  # similarities
    assert held[0].held_out is not None and len(held[0].held_out.features) == len(set(labels))
    assert loo[0].held_out is None
    assert held[0].in_scope.offset != pytest.approx(loo[0].in_scope.offset)


def test_oos_calibration_is_validated():
    with pytest.raises(ValueError, match="oos_calibration"):
        FewShotConfig(oos_calibration="heldout").validate(check_encoder=False)


def test_scorer_trains_when_a_small_corpus_yields_fewer_episodes_than_asked(
        toy_corpora, toy_episodes, monkeypatch):
    """The validation split is a fifth of the episodes drawn, not of those requested: with 30
    of 200 drawn, a fifth of 200 (40) would leave no episode to train on."""
    from types import SimpleNamespace

    from rasa_meta.training import in_scope

    supply = iter(toy_episodes[:30])
    monkeypatch.setattr(in_scope, "embed_corpora", lambda *a, **k: toy_corpora)
    monkeypatch.setattr(in_scope, "sample_scorer_episode", lambda *a, **k: next(supply, None))
    encoder = SimpleNamespace(metadata={})
    scorer, history = in_scope.train_scorer(encoder, [], episodes=200)
    assert scorer.trained_on["episodes"] == 24
    assert 0.0 <= history["meta_valid"]["auroc"] <= 1.0

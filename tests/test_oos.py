"""Out-of-scope scores from in-scope data only, on constructed embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import MatchingHead, PrototypeHead
from rasa_meta.runtime.in_scope import SimilarityCalibrator, leave_one_out_similarities


def clustered(seed=0, n_intents=5, per=6, noise=0.15):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_intents, 16, generator=g), dim=1)
    emb = torch.cat([centres[i] + noise * torch.randn(per, 16, generator=g)
                     for i in range(n_intents)])
    labels = [f"i{i}" for i in range(n_intents) for _ in range(per)]
    return F.normalize(emb, dim=1), labels, centres


def test_leave_one_out_excludes_the_example_itself():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    head = PrototypeHead().fit(emb, ["a", "a", "b"])
    loo = leave_one_out_similarities(head)
    # each "a" example against the other one only: cos = 0; "b" has one example: skipped
    assert torch.allclose(loo, torch.zeros(2))
    matching = MatchingHead().fit(emb, ["a", "a", "b"])
    assert torch.allclose(leave_one_out_similarities(matching), torch.zeros(2))


def test_far_messages_score_lower_than_in_scope_ones():
    emb, labels, centres = clustered()
    head = PrototypeHead(0.05).fit(emb, labels)
    cal = SimilarityCalibrator.fit(head, 0.05)
    g = torch.Generator().manual_seed(1)
    near = F.normalize(centres + 0.15 * torch.randn(5, 16, generator=g), dim=1)
    far = F.normalize(torch.randn(50, 16, generator=g), dim=1)
    p_near = cal(head.similarities(near).max(1).values)
    p_far = cal(head.similarities(far).max(1).values)
    assert p_near.min() > p_far.max()
    assert p_near.mean() > 0.8 and p_far.mean() < 0.2
    # a training example is fully in scope
    assert cal(head.similarities(emb[:1]).max(1).values).item() == 1.0


def test_midpoint_sits_at_the_chosen_quantile():
    emb, labels, _ = clustered(per=20)
    head = PrototypeHead().fit(emb, labels)
    loo = leave_one_out_similarities(head)
    cal = SimilarityCalibrator.fit(head, 0.1)
    assert abs(cal(torch.quantile(loo, 0.1).reshape(1)).item() - 0.5) < 1e-5
    assert cal(torch.quantile(loo, 0.5).reshape(1)).item() == 1.0
    stricter = SimilarityCalibrator.fit(head, 0.3)
    x = torch.quantile(loo, 0.2).reshape(1)
    assert stricter(x) < cal(x)


def test_without_spread_to_learn_from_everything_is_in_scope():
    head = PrototypeHead().fit(torch.eye(3), ["a", "b", "c"])  # one example per intent
    cal = SimilarityCalibrator.fit(head)
    assert not cal.enabled
    assert cal(torch.tensor([-1.0, 0.0])).tolist() == [1.0, 1.0]
    assert SimilarityCalibrator.from_dict(cal.to_dict()) == cal


def test_threshold_selection_on_a_toy_validation_set():
    import numpy as np

    from rasa_meta.tooling.oos_eval import ScoredSplit, choose_threshold, evaluate_oos

    valid_in = ScoredSplit(np.array([0.9, 0.8, 0.7, 0.35]), ["a", "a", "b", "b"],
                           ["a", "a", "b", "a"])
    valid_oos = ScoredSplit(np.array([0.1, 0.3, 0.5]), ["a", "b", "a"], [None] * 3)
    # at 0.7: all 3 correct in-scope kept (3/4), all 3 OOS rejected: the best mean (0.875)
    assert choose_threshold(valid_in, valid_oos) == 0.7
    report = evaluate_oos(None, valid_in, valid_oos, valid_in, valid_oos)
    assert report.in_scope_accuracy == 0.75 and report.oos_recall == 1.0
    assert report.auroc == 11 / 12  # 0.35 ranks below 0.5, all other pairs ordered


def test_fallback_classifier_fires_on_far_message_not_on_training_example(tiny_encoder_dir,
                                                                           tmp_path):
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.nlu.classifiers.fallback_classifier import FallbackClassifier
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from rasa_meta.component import MetaIntentClassifier
    from tests.conftest import toy_corpus

    texts, labels = toy_corpus()
    storage = LocalModelStorage(tmp_path)
    context = ExecutionContext(GraphSchema({}), "m")
    config = {**MetaIntentClassifier.get_default_config(), "encoder": str(tiny_encoder_dir)}
    clf = MetaIntentClassifier.create(config, storage, Resource("c"), context)
    clf.train(TrainingData([Message(data={"text": t, "intent": i})
                            for t, i in zip(texts, labels)]))
    fallback = FallbackClassifier.create(
        {**FallbackClassifier.get_default_config(), "threshold": 0.4,
         "ambiguity_threshold": 0.0},
        storage, Resource("f"), context,
    )
    far = "§§§ 12345 ¤¤¤ zzzz qqqq xxxx"
    messages = fallback.process(clf.process([Message(data={"text": texts[6]}),
                                             Message(data={"text": far})]))
    assert messages[0].get("intent")["name"] == labels[6]
    assert messages[1].get("intent")["name"] == "nlu_fallback"


def test_threshold_rule_that_bounds_the_in_scope_cost():
    import numpy as np

    from rasa_meta.tooling.oos_eval import ScoredSplit, choose_threshold

    valid_in = ScoredSplit(np.array([0.9, 0.8, 0.6, 0.5]), ["a"] * 4, ["a"] * 4)
    valid_oos = ScoredSplit(np.array([0.2, 0.55, 0.7]), ["a"] * 3, [None] * 3)
    # balanced: 0.8 keeps 2/4 and rejects 3/3 (0.75) vs 0.6: 3/4 and 2/3 (0.708...)
    assert choose_threshold(valid_in, valid_oos) == 0.8
    # no in-scope loss allowed: the highest threshold that keeps all four is 0.5
    assert choose_threshold(valid_in, valid_oos, max_in_scope_drop=0.0) == 0.5
    assert choose_threshold(valid_in, valid_oos, max_in_scope_drop=0.25) == 0.6

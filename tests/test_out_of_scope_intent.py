"""A bot's own out_of_scope intent (``out_of_scope_intent``): it takes the probability of being
out of scope, the in-scope score is calibrated on the other intents, and with the option off
the model answers exactly as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from rasa_meta.component import RESPONSE_KEYS_PROPERTY, MetaIntentClassifier
from rasa_meta.runtime.heads import HEAD_TYPES
from rasa_meta.runtime.in_scope import (
    FEATURES,
    BotStatistics,
    InScopeEstimator,
    InScopeScorer,
    SimilarityCalibrator,
    in_scope_features,
    leave_one_out_features,
)
from rasa_meta.runtime.model import MODEL_FILE, FewShotConfig, FewShotIntentModel
from rasa_meta.runtime.out_of_scope_intent import in_scope_part, out_of_scope_labels
from rasa_meta.runtime.traffic_share import right_logit
from tests.conftest import toy_corpus
from tests.rasa_helpers import context, load, make_config, new_storage, parse

DIM = 32
IN_SCOPE = ("greet", "order_status", "refund")


def unit(*directions: int, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """A unit vector along the sum of basis ``directions``, plus seeded noise."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.zeros(DIM)
    v[list(directions)] = 1.0
    return F.normalize(v + noise * torch.randn(DIM, generator=gen), dim=0)


def bot(oos: Optional[Dict[str, List[int]]] = None) -> Tuple[torch.Tensor, List[str]]:
    """Three tight intents along axes 0-2, and out-of-scope labels whose examples are spread
    over axes 3-11 (diverse, as real out_of_scope examples are): label -> their axes."""
    if oos is None:
        oos = {"out_of_scope": [3, 4, 5, 6, 7, 8]}
    vectors, labels = [], []
    for axis, intent in enumerate(IN_SCOPE):
        for k in range(5):
            vectors.append(unit(axis, noise=0.15, seed=10 * axis + k))
            labels.append(intent)
    for label, axes in oos.items():
        for k, axis in enumerate(axes):
            vectors.append(unit(axis, noise=0.15, seed=100 + 10 * axis + k))
            labels.append(label)
    return torch.stack(vectors), labels


FAR = unit(20, 21)  # unlike every intent, out_of_scope's examples included
NEAR = [unit(0, noise=0.03, seed=7), unit(1, noise=0.03, seed=8), unit(2, noise=0.03, seed=9),
        F.normalize(unit(0) + unit(1), dim=0)]  # the last: between two intents
QUERIES = torch.stack([FAR, *NEAR, unit(4, noise=0.1, seed=11)])  # last: like an OOS example


def scorer() -> InScopeScorer:
    """A learned scorer that grows with every similarity feature (as the shipped one does)."""
    n = len(FEATURES)
    return InScopeScorer([4.0, 1.0, 2.0, 1.0, 1.0] + [0.0] * (n - 5), 0.0, [0.0] * n, [1.0] * n)


def model_for(encoder: Path, method: str, intent: Optional[str] = "out_of_scope",
              **options) -> FewShotIntentModel:
    config = FewShotConfig(encoder=str(encoder), device="cpu", temperature=0.1,
                           label_name_weight=0.0, out_of_scope_intent=intent, **options)
    model = FewShotIntentModel(config)
    if method == "learned":
        model._scorer = scorer  # type: ignore[method-assign]  # the tiny encoder ships none
    else:
        model.config.out_of_scope_detection = method
    return model


def fitted(encoder: Path, method: str, intent: Optional[str] = "out_of_scope",
           oos: Optional[Dict[str, List[int]]] = None, **options) -> FewShotIntentModel:
    emb, labels = bot(oos)
    model = model_for(encoder, method, intent, **options)
    return model.fit_embeddings(emb, labels, [f"text {i}" for i in range(len(labels))])


def predict(model: FewShotIntentModel, queries: torch.Tensor = QUERIES):
    conf, in_scope, _ = model.predict_embeddings(queries)
    return conf, in_scope


METHODS = ["similarity", "learned"]


@pytest.mark.parametrize("head", HEAD_TYPES)
@pytest.mark.parametrize("method", METHODS)
def test_a_message_unlike_every_intent_is_the_bots_out_of_scope(tiny_encoder_dir, method, head):
    model = fitted(tiny_encoder_dir, method, head=head)
    part = model.in_scope.in_scope_head(model.head)
    assert part.labels == sorted(IN_SCOPE) and part.kind == model.head.kind
    conf, in_scope = predict(model, FAR.unsqueeze(0))
    assert model.labels[int(conf[0].argmax())] == "out_of_scope"
    assert float(conf[0].max()) >= 0.9
    assert float(in_scope[0]) <= 0.1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("without", ["option off", "no such intent", "no out_of_scope examples"])
def test_without_it_the_message_is_spread_thin_as_before(tiny_encoder_dir, method, without):
    if without == "option off":
        model = fitted(tiny_encoder_dir, method, intent=None)
    elif without == "no such intent":  # the option names an intent the bot does not have
        model = fitted(tiny_encoder_dir, method, intent="chitchat")
    else:
        model = fitted(tiny_encoder_dir, method, oos={})
    assert model.in_scope.out_of_scope_labels == []
    conf, in_scope = predict(model, FAR.unsqueeze(0))
    assert float(conf[0].max()) < 0.5  # nothing confident: nlu_fallback
    assert float(conf[0].max()) < float(in_scope[0]) + 1e-6  # spread over the intents
    if without == "no out_of_scope examples":
        assert float(in_scope[0]) < 0.1
    else:  # the diverse out_of_scope examples count as in scope: the spread is wider
        on = fitted(tiny_encoder_dir, method)
        assert float(predict(on, FAR.unsqueeze(0))[1][0]) < float(in_scope[0])


@pytest.mark.parametrize("method", METHODS)
def test_in_scope_intents_keep_their_ranking_and_ratios(tiny_encoder_dir, method):
    model = fitted(tiny_encoder_dir, method)
    conf, in_scope = predict(model)
    probs = model.head.predict_proba(QUERIES)
    inside = [model.labels.index(lab) for lab in IN_SCOPE]
    # the in-scope intents share their confidence as the head shares its probability: the
    # ranking among them is unchanged
    held = conf[:, inside].sum(1) > 1e-6
    assert bool(held[1:5].all())
    share = conf[held][:, inside] / conf[held][:, inside].sum(1, keepdim=True)
    head_share = probs[held][:, inside] / probs[held][:, inside].sum(1, keepdim=True)
    assert torch.allclose(share, head_share, atol=1e-5)
    for row in held.nonzero().flatten().tolist():
        assert (conf[row, inside].argsort(descending=True).tolist()
                == probs[row, inside].argsort(descending=True).tolist())
    # messages like one intent are that intent, with the confidence of an answer
    for row in (1, 2, 3):
        assert model.labels[int(conf[row].argmax())] == IN_SCOPE[row - 1]
        assert float(conf[row].max()) > 0.5
    # the in-scope probability is what the in-scope intents hold
    if method == "similarity":
        assert torch.allclose(conf[:, inside].sum(1), in_scope, atol=1e-6)
    else:  # the learned score: the top in-scope intent's confidence is P(right)
        assert torch.allclose(conf[:, inside].max(1).values, in_scope, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_rows_sum_to_one(tiny_encoder_dir, method):
    model = fitted(tiny_encoder_dir, method)
    conf, _ = predict(model)
    oos = model.labels.index("out_of_scope")
    inside = conf.sum(1) - conf[:, oos]
    fits = inside <= 1
    if method == "similarity":
        assert bool(fits.all())
    assert bool(fits.any())
    assert torch.allclose(conf[fits].sum(1), torch.ones(int(fits.sum())), atol=1e-5)
    # where the learned score's ratios make the in-scope intents sum past 1 (an ambiguous
    # message), the out-of-scope label gets nothing rather than a negative share
    assert bool((conf[~fits, oos] == 0).all())


def test_the_out_of_scope_probability_is_what_the_in_scope_intents_leave(tiny_encoder_dir):
    model = fitted(tiny_encoder_dir, "similarity")
    conf, in_scope = predict(model)
    oos = model.labels.index("out_of_scope")
    assert torch.allclose(conf[:, oos], 1 - in_scope, atol=1e-6)
    probs = model.head.predict_proba(QUERIES)
    # p(in scope) = p_in of the in-scope intents alone, times the head's mass off out_of_scope
    part = in_scope_part(model.head, ["out_of_scope"])
    p_in = SimilarityCalibrator.fit(part)(part.similarities(QUERIES).max(1).values)
    assert torch.allclose(in_scope, p_in * (1 - probs[:, oos]), atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_statistics_and_calibration_read_the_in_scope_intents_only(tiny_encoder_dir, method):
    on, off = fitted(tiny_encoder_dir, method), fitted(tiny_encoder_dir, method, intent=None)
    assert on.in_scope.out_of_scope_labels == ["out_of_scope"]
    part = in_scope_part(on.head, ["out_of_scope"])
    assert part.labels == sorted(IN_SCOPE) and len(part.support) == 15
    if method == "learned":
        assert on.in_scope.stats == BotStatistics.of(part)
        assert on.in_scope.stats.n_intents == 3 and off.in_scope.stats.n_intents == 4
        # the diverse out_of_scope examples widened the spread with the option off
        assert (on.in_scope.stats.typical - on.in_scope.stats.low
                < off.in_scope.stats.typical - off.in_scope.stats.low)
    else:
        assert on.in_scope.calibrator == SimilarityCalibrator.fit(part)
        assert on.in_scope.calibrator.low > off.in_scope.calibrator.low


@pytest.mark.parametrize("method", METHODS)
def test_option_off_is_todays_output_exactly(tiny_encoder_dir, method):
    emb, labels = bot()
    model = model_for(tiny_encoder_dir, method, intent=None)
    texts = [f"text {i}" for i in range(len(labels))]
    before = predict(model.fit_embeddings(emb, labels, texts))
    model.config.out_of_scope_intent = "out_of_scope"  # on, then off again, in one process
    on = predict(model.fit_embeddings(emb, labels, texts))
    model.config.out_of_scope_intent = None
    after = predict(model.fit_embeddings(emb, labels, texts))
    assert not torch.equal(on[0], before[0])
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    # and that output is the formula of a model that knows no out-of-scope intent
    head, probs = model.head, model.head.predict_proba(QUERIES)
    sims = head.similarities(QUERIES)
    if method == "similarity":
        score = SimilarityCalibrator.fit(head)(sims.max(1).values)
        expected = probs * score.unsqueeze(1)
    else:
        stats = BotStatistics.of(head)
        offset = -float(torch.quantile(scorer().logits(leave_one_out_features(head, stats)),
                                       0.05))
        z = scorer().logits(in_scope_features(head, QUERIES, stats, sims, probs)) + offset
        score = torch.sigmoid(right_logit(z, model.config.out_of_scope_share))
        expected = (probs * (score / probs.max(1).values).unsqueeze(1)).clamp(max=1.0)
    assert torch.allclose(before[0], expected, atol=1e-6)
    assert torch.allclose(before[1], score, atol=1e-6)


def test_empty_name_turns_it_off_and_bad_names_are_config_errors(tiny_encoder_dir):
    assert fitted(tiny_encoder_dir, "similarity", intent="").in_scope.out_of_scope_labels == []
    for bad in (5, ["out_of_scope"], "out_of_scope/weather"):
        with pytest.raises(InvalidConfigException, match="out_of_scope_intent"):
            MetaIntentClassifier.validate_config(
                make_config(tiny_encoder_dir, out_of_scope_intent=bad), check_encoder=False)
    for fine in (None, "", "off_topic"):
        MetaIntentClassifier.validate_config(
            make_config(tiny_encoder_dir, out_of_scope_intent=fine), check_encoder=False)
    assert MetaIntentClassifier.get_default_config()["out_of_scope_intent"] == (
        FewShotConfig().out_of_scope_intent)


def test_a_bot_of_out_of_scope_examples_only_has_nothing_to_set_apart():
    assert out_of_scope_labels(["out_of_scope"], "out_of_scope") == []
    assert out_of_scope_labels(["out_of_scope/a", "out_of_scope/b"], "out_of_scope") == []
    assert out_of_scope_labels(["a", "out_of_scope", "out_of_scope_x", "out_of_scope/b"],
                               "out_of_scope") == ["out_of_scope", "out_of_scope/b"]


@pytest.mark.parametrize("method", METHODS)
def test_response_keys_of_the_out_of_scope_intent_share_its_probability(tiny_encoder_dir,
                                                                        method):
    keys = {"out_of_scope/weather": [3, 4, 5], "out_of_scope/joke": [6, 7, 8]}
    model = fitted(tiny_encoder_dir, method, oos=keys)
    assert sorted(model.in_scope.out_of_scope_labels) == sorted(keys)
    conf, in_scope = predict(model)
    cols = [model.labels.index(k) for k in keys]
    probs = model.head.predict_proba(QUERIES)
    # the far message: the keys hold nearly everything, split as the head splits them
    assert float(conf[0, cols].sum()) >= 0.9
    assert torch.allclose(conf[:, cols[0]] / conf[:, cols[1]],
                          probs[:, cols[0]] / probs[:, cols[1]], rtol=1e-4)
    inside = [model.labels.index(lab) for lab in IN_SCOPE]
    if method == "similarity":
        assert torch.allclose(conf.sum(1), torch.ones(len(conf)), atol=1e-5)
        assert torch.allclose(conf[:, inside].sum(1), in_scope, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_save_and_load_give_identical_predictions(tiny_encoder_dir, tmp_path, method):
    model = fitted(tiny_encoder_dir, method)
    before = predict(model)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / MODEL_FILE).read_text())["in_scope"][
        "out_of_scope_labels"] == ["out_of_scope"]
    loaded = FewShotIntentModel.load(tmp_path / "m")
    if method == "learned":
        loaded._scorer = scorer  # type: ignore[method-assign]
    assert loaded.in_scope.out_of_scope_labels == ["out_of_scope"]
    after = predict(loaded)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


@pytest.mark.parametrize("method", METHODS)
def test_a_model_saved_without_the_field_loads_as_before(tiny_encoder_dir, tmp_path, method):
    """Older models have no out_of_scope_labels: their out_of_scope intent stays an intent."""
    model = fitted(tiny_encoder_dir, method, intent=None)
    before = predict(model)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / MODEL_FILE).read_text())
    assert "out_of_scope_labels" not in meta["in_scope"]  # what older rasa-meta writes
    meta["config"].pop("out_of_scope_intent")  # nor did their config have the key
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps(meta))
    loaded = FewShotIntentModel.load(tmp_path / "m")
    assert loaded.config.out_of_scope_intent == FewShotConfig().out_of_scope_intent
    assert loaded.in_scope.out_of_scope_labels == []
    after = predict(loaded)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert InScopeEstimator.from_dict(model.in_scope.to_dict()).out_of_scope_labels == []


def test_the_learned_logit_reads_the_in_scope_intents(tiny_encoder_dir):
    """What `rasa-meta calibrate` and the inbox estimate the traffic share from."""
    from rasa_meta.tooling.calibrate import logits_from_embeddings

    model = fitted(tiny_encoder_dir, "learned")
    z, tops = logits_from_embeddings(model, QUERIES)
    part = in_scope_part(model.head, ["out_of_scope"])
    expected = scorer().logits(in_scope_features(part, QUERIES, model.in_scope.stats))
    assert torch.allclose(torch.as_tensor(z), expected + model.in_scope.offset, atol=1e-5)
    assert tops[0] in IN_SCOPE + ("out_of_scope",) and len(tops) == len(QUERIES)


# --- through the Rasa component, with the tiny encoder and the inner loop ------------------

OFF_TOPIC = ["what is the weather like on mars", "tell me a joke about penguins",
             "who won the football world cup", "recommend a good pizza recipe",
             "what is the square root of two"]


def classifier_data(keys: bool = False) -> TrainingData:
    texts, labels = toy_corpus()
    examples = [Message(data={"text": t, "intent": lab}) for t, lab in zip(texts, labels)]
    for i, text in enumerate(OFF_TOPIC):
        data = {"text": text, "intent": "out_of_scope"}
        if keys:
            data["intent_response_key"] = f"out_of_scope/{'other' if i % 2 else 'trivia'}"
        examples.append(Message(data=data))
    return TrainingData(examples)


@pytest.fixture(scope="module", params=["intent", "response keys"])
def trained_pair(request, tiny_encoder_dir, tmp_path_factory):
    """(config, storage, classifier) with the option on, and the same with it off."""
    out = {}
    for option in ("out_of_scope", None):
        storage = new_storage(tmp_path_factory.mktemp("ooi") / "s")
        config = make_config(tiny_encoder_dir, out_of_scope_intent=option, random_seed=0)
        clf = MetaIntentClassifier.create(config, storage, Resource("clf"), context())
        clf.train(classifier_data(keys=request.param == "response keys"))
        out[option] = (config, storage, clf)
    return request.param, out


def test_the_parse_output_names_the_out_of_scope_intent(trained_pair):
    kind, pair = trained_pair
    _, _, on = pair["out_of_scope"]
    _, _, off = pair[None]
    # far from everything: the intent is predicted as the bot's out_of_scope
    far = ["zzzz qqqq xxxx"]
    in_scope = ["where is my order", "refund please", "hello there"]
    on_far, off_far = parse(on, far)[0], parse(off, far)[0]
    assert on_far.get("intent")["name"] == "out_of_scope"
    assert on_far.get("intent")["confidence"] > off_far.get("intent")["confidence"]
    ranking = on_far.get("intent_ranking")
    assert [r["name"] for r in ranking].count("out_of_scope") == 1  # keys summed in
    assert sum(r["confidence"] for r in ranking) == pytest.approx(1.0, abs=1e-5)
    if kind == "response keys":
        keys = on_far.get(RESPONSE_KEYS_PROPERTY)
        assert keys[0][0].startswith("out_of_scope/")
    for message, gold in zip(parse(on, in_scope), ["order_status", "refund", "greet"]):
        assert message.get("intent")["name"] == gold


def test_the_component_saves_and_loads_the_out_of_scope_intent(trained_pair):
    _, pair = trained_pair
    config, storage, clf = pair["out_of_scope"]
    queries = ["zzzz qqqq xxxx", "where is my order", "tell me a joke about penguins"]
    before, after = parse(clf, queries), parse(load(config, storage), queries)
    for a, b in zip(before, after):
        assert a.get("intent") == b.get("intent")
        assert a.get("intent_ranking") == b.get("intent_ranking")


def test_held_out_calibration_scores_the_in_scope_intents_only(tiny_encoder_dir):
    from rasa_meta.training.adapt import adapt

    texts, labels = toy_corpus()
    texts, labels = texts + OFF_TOPIC, labels + ["out_of_scope"] * len(OFF_TOPIC)
    config = FewShotConfig(encoder=str(tiny_encoder_dir), device="cpu", epochs=1,
                           oos_calibration="held_out", out_of_scope_detection="similarity",
                           out_of_scope_intent="out_of_scope")
    model = adapt(FewShotIntentModel(config), texts, labels)
    assert model.held_out is not None
    assert len(model.held_out.similarities) == len(set(labels)) - 1  # one per in-scope intent


def test_the_inner_loop_does_not_read_the_option(tiny_encoder_dir):
    """So one inner loop serves both settings (scripts/out_of_scope_intent.py relies on it)."""
    from rasa_meta.training.adapt import adapt

    texts, labels = toy_corpus()
    texts, labels = texts + OFF_TOPIC, labels + ["out_of_scope"] * len(OFF_TOPIC)
    runs = []
    for option in ("out_of_scope", None):
        config = FewShotConfig(encoder=str(tiny_encoder_dir), device="cpu", epochs=1,
                               random_seed=3, out_of_scope_intent=option)
        model = adapt(FewShotIntentModel(config), texts, labels)
        if option is None:  # then refitted with the option on, from the adapted embeddings
            model.config.out_of_scope_intent = "out_of_scope"
            model.fit_embeddings(model.embed(texts), labels, texts)
        runs.append(model.predict(["zzzz qqqq", "where is my order"]))
    assert torch.allclose(runs[0][0], runs[1][0], atol=1e-6)

"""MetaResponseSelector: retrieval intents learnt per response key by MetaIntentClassifier,
answered in exactly the structure of Rasa's ResponseSelector."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from rasa.engine.graph import ExecutionContext, GraphSchema, SchemaNode
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from rasa_meta.component import MetaIntentClassifier
from rasa_meta.runtime.retrieval import intent_scores, response_key_scores
from rasa_meta.selector import MetaResponseSelector
from tests.conftest import REPO, toy_corpus
from tests.rasa_helpers import context, load, make_config, new_storage, parse

RECIPE = REPO / "docs" / "recipes" / "retrieval"
FAQ = {
    "faq/ask_hours": ["when are you open", "what are your opening hours", "are you open sundays"],
    "faq/ask_shipping": ["how much is shipping", "do you charge for delivery", "is shipping free"],
    "faq/ask_paypal": ["can i pay with paypal"],  # one example
    "chitchat/ask_name": ["what is your name", "who are you", "do you have a name"],
}
RESPONSES = {f"utter_{key}": [{"text": f"answer to {key}"}] for key in FAQ}


def retrieval_data() -> TrainingData:
    texts, labels = toy_corpus()
    examples = [Message(data={"text": t, "intent": lab}) for t, lab in zip(texts, labels)]
    examples += [Message(data={"text": t, "intent": key.split("/")[0], "intent_response_key": key})
                 for key, ts in FAQ.items() for t in ts]
    return TrainingData(examples, responses=dict(RESPONSES))


def pipeline_context(*classes: type) -> ExecutionContext:
    nodes = {f"run_{c.__name__}{i}": SchemaNode(needs={}, uses=c, constructor_name="create",
                                                 fn="train", config={})
             for i, c in enumerate(classes)}
    return ExecutionContext(GraphSchema(nodes), "m")


@pytest.fixture(scope="module")
def trained(tiny_encoder_dir, tmp_path_factory):
    """(classifier config, storage, classifier, selector), trained on the toy intents plus
    FAQ and chitchat keys."""
    storage = new_storage(tmp_path_factory.mktemp("selector") / "s")
    config = make_config(tiny_encoder_dir, epochs=0)
    ctx = pipeline_context(MetaIntentClassifier, MetaResponseSelector)
    clf = MetaIntentClassifier.create(config, storage, Resource("clf"), ctx)
    clf.train(retrieval_data())
    selector = MetaResponseSelector.create(MetaResponseSelector.get_default_config(), storage,
                                           Resource("sel"), ctx)
    selector.train(retrieval_data())
    return config, storage, clf, selector


def answer(clf, selector, texts: List[str]) -> List[Message]:
    return selector.process(parse(clf, texts))


def test_intent_probability_is_the_sum_of_its_keys():
    labels = ["greet", "faq/a", "faq/b", "chitchat/c"]
    assert intent_scores(labels, [0.1, 0.3, 0.4, 0.2]) == [("faq", pytest.approx(0.7)),
                                                           ("chitchat", 0.2), ("greet", 0.1)]
    assert response_key_scores(labels, [0.1, 0.3, 0.4, 0.2]) == [("faq/b", 0.4), ("faq/a", 0.3),
                                                                 ("chitchat/c", 0.2)]


def test_classifier_learns_keys_and_reports_retrieval_intents(trained):
    _, _, clf, _ = trained
    assert "faq/ask_hours" in clf.model.labels and "faq" not in clf.model.labels
    message = parse(clf, ["when are you open"])[0]
    names = [r["name"] for r in message.get("intent_ranking")]
    assert message.get("intent")["name"] == "faq" and "faq/ask_hours" not in names
    assert len(names) == len(set(names)) == 6  # 4 toy intents, faq, chitchat
    keys = message.get("rasa_meta_response_keys")
    assert keys[0][0] == "faq/ask_hours"
    faq_total = sum(s for k, s in keys if k.startswith("faq/"))
    assert message.get("intent")["confidence"] == pytest.approx(faq_total, abs=1e-6)
    assert "rasa_meta_response_keys" not in message.as_dict(only_output_properties=True)


def test_selector_answers_each_key_including_a_single_example(trained):
    _, _, clf, selector = trained
    out = answer(clf, selector, ["what are your opening hours", "can i pay with paypal",
                                 "who are you"])
    expected = ["faq/ask_hours", "faq/ask_paypal", "chitchat/ask_name"]
    for message, key in zip(out, expected):
        response = message.get("response_selector")["default"]["response"]
        assert response["intent_response_key"] == key
        assert response["utter_action"] == f"utter_{key}"
        assert response["responses"] == RESPONSES[f"utter_{key}"]
        assert isinstance(response["confidence"], float) and 0 < response["confidence"] <= 1
    ranking = out[0].get("response_selector")["default"]["ranking"]
    assert sum(r["confidence"] for r in ranking) == pytest.approx(1.0)
    assert set(out[0].get("response_selector")["all_retrieval_intents"]) == {"faq", "chitchat"}


def test_selector_for_one_retrieval_intent(trained, tmp_path):
    _, _, clf, _ = trained
    config = {**MetaResponseSelector.get_default_config(), "retrieval_intent": "chitchat"}
    storage = new_storage(tmp_path / "s")
    selector = MetaResponseSelector.create(config, storage, Resource("sel"), context())
    selector.train(retrieval_data())
    prediction = answer(clf, selector, ["when are you open"])[0].get("response_selector")
    assert set(prediction) == {"all_retrieval_intents", "chitchat"}
    assert all(r["intent_response_key"].startswith("chitchat/")
               for r in prediction["chitchat"]["ranking"])
    assert set(selector.responses) == {"utter_chitchat/ask_name"}


def test_persist_and_reload_give_identical_output(trained):
    config, storage, clf, selector = trained
    texts = ["is shipping free", "hello there", "can i pay with paypal", "zzz"]
    before = [m.get("response_selector") for m in answer(clf, selector, texts)]
    clf2 = load(config, storage)
    selector2 = MetaResponseSelector.load(MetaResponseSelector.get_default_config(), storage,
                                          Resource("sel"), context())
    after = [m.get("response_selector") for m in answer(clf2, selector2, texts)]
    assert before == after


def test_selector_needs_the_classifier_before_it(tmp_path):
    with pytest.raises(InvalidConfigException, match="MetaIntentClassifier"):
        MetaResponseSelector.create(MetaResponseSelector.get_default_config(),
                                    new_storage(tmp_path / "s"), Resource("sel"),
                                    pipeline_context(MetaResponseSelector))
    with pytest.raises(InvalidConfigException, match="faq/ask_hours"):
        MetaResponseSelector.validate_config({"retrieval_intent": "faq/ask_hours"})
    with pytest.raises(InvalidConfigException, match="unknown option"):
        MetaResponseSelector.validate_config({"retrieval_intents": "faq"})


def test_retrieval_intents_without_a_selector_warn(tiny_encoder_dir, tmp_path, caplog):
    clf = MetaIntentClassifier.create(make_config(tiny_encoder_dir, epochs=0),
                                      new_storage(tmp_path / "s"), Resource("clf"),
                                      pipeline_context(MetaIntentClassifier))
    with caplog.at_level(logging.WARNING, logger="rasa_meta.component"):
        clf.train(retrieval_data())
    assert "no response selector" in caplog.text and "MetaResponseSelector" in caplog.text


# --- through `rasa train nlu`, against Rasa's own ResponseSelector ---------------------------


def train_nlu(tmp: Path, pipeline: List[Dict[str, Any]]) -> str:
    from rasa.model_training import train_nlu as rasa_train_nlu

    tmp.mkdir(parents=True, exist_ok=True)
    config = {"recipe": "default.v1", "language": "en", "assistant_id": "t",
              "pipeline": pipeline, "policies": []}
    (tmp / "config.yml").write_text(yaml.safe_dump(config))
    return rasa_train_nlu(str(tmp / "config.yml"), str(RECIPE / "nlu.yml"), str(tmp / "models"),
                          fixed_model_name="nlu", domain=str(RECIPE / "domain.yml"))


def shape(value: Any) -> Any:
    """The structure of a parse output: dict keys and value types, lists by their first item."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


@pytest.mark.slow
def test_output_has_the_structure_of_rasas_response_selector(tiny_encoder_dir, tmp_path,
                                                             monkeypatch):
    from rasa.core.agent import Agent

    from rasa_meta.runtime import encoder as encoder_module

    rasa_model = train_nlu(tmp_path / "rasa", [
        {"name": "WhitespaceTokenizer"}, {"name": "CountVectorsFeaturizer"},
        {"name": "DIETClassifier", "epochs": 2}, {"name": "ResponseSelector", "epochs": 2}])
    ours = train_nlu(tmp_path / "ours", [
        {"name": "rasa_meta.MetaIntentClassifier", "encoder": str(tiny_encoder_dir)},
        {"name": "rasa_meta.MetaResponseSelector"}])
    loads = []
    original = encoder_module.SentenceEncoder.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(encoder_module.SentenceEncoder, "from_pretrained",
                        classmethod(counting))
    text = "is shipping free"
    expected = asyncio.run(Agent.load(rasa_model).parse_message(text))["response_selector"]
    got = asyncio.run(Agent.load(ours).parse_message(text))["response_selector"]
    assert shape(got) == shape(expected)
    assert set(got["all_retrieval_intents"]) == set(expected["all_retrieval_intents"])
    assert len(loads) == 1, "one encoder for both components"

"""Intent names and descriptions as support: text, zero-shot intents, NLU metadata, persistence."""

from __future__ import annotations

import pytest
import torch

from rasa_meta.runtime.label_text import label_texts, name_text
from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.training.adapt import adapt
from tests.conftest import toy_corpus


@pytest.mark.parametrize("label, text", [
    ("check_order_status", "check order status"),
    ("AddToPlaylist", "add to playlist"),
    ("faq/ask_hours", "faq ask hours"),
    ("IN:GET_EVENT", "get event"),
    ("card-arrival", "card arrival"),
    ("check_in", "check in"),
    ("intent_17", ""),
    ("17", ""),
])
def test_names_are_turned_into_words_as_documented(label, text):
    assert name_text(label) == text


def test_a_description_wins_over_the_name_and_wordless_names_give_nothing():
    texts = label_texts(["card_arrival", "intent_3", "refund"], {"refund": "money back"})
    assert texts == {"card_arrival": "card arrival", "refund": "money back"}


def _model(encoder, **options) -> FewShotIntentModel:
    return FewShotIntentModel(FewShotConfig(encoder=str(encoder), device="cpu", epochs=0,
                                            out_of_scope_detection=False, **options))


def test_names_are_on_by_default_and_off_leaves_the_examples_alone(tiny_encoder_dir):
    assert FewShotConfig().label_name_weight == 1.0

def test_names_off_leave_the_prototypes_as_the_examples_make_them(tiny_encoder_dir):
    texts, labels = toy_corpus()
    off = adapt(_model(tiny_encoder_dir, label_name_weight=0.0), texts, labels)
    on = adapt(_model(tiny_encoder_dir, label_name_weight=1.0), texts, labels)
    assert off.head.label_support is None and "label_support" not in off.head.state_dict()
    assert not torch.allclose(off.head.prototypes, on.head.prototypes)
    # an example-less name with weight w moves a prototype towards it: w examples' worth
    assert on.head.label_weight == 1.0


def test_an_intent_with_a_description_and_no_examples_is_ranked(tiny_encoder_dir):
    texts, labels = toy_corpus()
    description = "the customer wants to close the account for good"
    model = adapt(_model(tiny_encoder_dir, label_name_weight=1.0, head_steps=0,
                         intent_descriptions={"close_account": description}), texts, labels)
    assert "close_account" in model.labels
    conf, _, _ = model.predict([description])
    assert model.labels[int(conf.argmax())] == "close_account"


def test_without_names_a_description_only_intent_is_not_learnt(tiny_encoder_dir):
    texts, labels = toy_corpus()
    model = adapt(_model(tiny_encoder_dir, label_name_weight=0.0,
                         intent_descriptions={"close_account": "close it"}), texts, labels)
    assert "close_account" not in model.labels


def test_descriptions_and_name_support_persist(tiny_encoder_dir, tmp_path):
    texts, labels = toy_corpus()
    model = adapt(_model(tiny_encoder_dir, label_name_weight=2.0), texts, labels,
                  {"refund": "the customer wants money back"})
    model.save(tmp_path)
    loaded = FewShotIntentModel.load(tmp_path)
    assert loaded.descriptions == {"refund": "the customer wants money back"}
    assert loaded.head.label_weight == 2.0
    assert torch.equal(loaded.head.prototypes, model.head.prototypes)
    probe = ["i want my money back", "hello"]
    assert torch.equal(loaded.predict(probe)[0], model.predict(probe)[0])


def test_descriptions_are_read_from_the_nlu_metadata(tmp_path):
    from rasa.shared.nlu.training_data.loading import load_data

    from rasa_meta.component import intent_descriptions

    nlu = tmp_path / "nlu.yml"
    nlu.write_text(
        'version: "3.1"\n'
        "nlu:\n"
        "- intent: check_balance\n"
        "  metadata:\n"
        "    description: the customer asks how much money is on an account\n"
        "  examples: |\n"
        "    - how much do i have\n"
        "    - balance please\n"
        "- intent: greet\n"
        "  examples: |\n"
        "    - hi\n",
        encoding="utf-8",
    )
    data = load_data(str(nlu))
    examples = data.intent_examples
    found = intent_descriptions(examples, [m.get("intent") for m in examples])
    assert found == {"check_balance": "the customer asks how much money is on an account"}


def test_accuracy_at_each_name_weight_is_that_of_rasa_train_at_that_weight(tiny_encoder_dir):
    """The evaluation rebuilds only the head per weight over one adaptation: the inner loop
    does not read names, so each number is what `rasa train` at that weight gives."""
    from rasa_meta.tooling.evaluation import inner_loop_accuracy
    from rasa_meta.training.corpus import IntentCorpus

    texts, labels = toy_corpus()
    train = IntentCorpus("toy", texts, labels)
    test = IntentCorpus("toy", ["where is my parcel", "refund now", "hi there"],
                        ["order_status", "refund", "greet"])
    shared = inner_loop_accuracy(str(tiny_encoder_dir), train, test, 1, 0,
                                 name_weights=[0.0, 4.0], label_name_weight=0.0)
    for weight in (0.0, 4.0):
        alone = inner_loop_accuracy(str(tiny_encoder_dir), train, test, 1, 0,
                                    label_name_weight=weight)
        assert shared[f"accuracy_names_{weight:g}"] == pytest.approx(alone["accuracy"])
    assert shared["accuracy_names_0"] == pytest.approx(shared["accuracy"])

"""What the encoder can read: texts made only of unknown tokens, and bots in other languages."""

from __future__ import annotations

import logging
import warnings

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema, SchemaNode
from rasa.engine.storage.resource import Resource
from rasa.graph_components.providers.nlu_training_data_provider import NLUTrainingDataProvider

from rasa_meta import component
from rasa_meta.component import MetaIntentClassifier, bot_language
from rasa_meta.runtime.encoder import SentenceEncoder, is_english_only
from rasa_meta.tooling.overlap import build_overlap_report
from tests.conftest import toy_corpus
from tests.rasa_helpers import make_config, new_storage, parse, train, training_data

EMOJI = ["😡", "😡😡!!", "❤️", "😍 😍"]


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(str(tiny_encoder_dir))


def test_texts_of_unknown_tokens_only_are_unreadable(encoder):
    texts = ["😡", "😡😡!!", "你好", "谢谢", "hello 😡", "???", "", "café", "Grüß dich", "ok!"]
    assert encoder.unreadable(texts) == [True, True, True, True, False, False, False, False,
                                         False, False]


@pytest.fixture(scope="module")
def emoji_bot(tiny_encoder_dir, tmp_path_factory):
    """The toy bot plus an intent whose examples are emoji only (which once became a catch-all
    answering every emoji at confidence 1.00)."""
    pairs = list(zip(*toy_corpus())) + [(e, "react_love") for e in EMOJI]
    config = make_config(tiny_encoder_dir, epochs=0)
    storage = new_storage(tmp_path_factory.mktemp("emoji") / "s")
    return train(config, storage, training_data(pairs))


def test_unreadable_examples_are_left_out_with_a_warning(tiny_encoder_dir, tmp_path, caplog):
    pairs = list(zip(*toy_corpus())) + [(e, "react_love") for e in EMOJI]
    with caplog.at_level(logging.WARNING, logger="rasa_meta.component"):
        clf = train(make_config(tiny_encoder_dir, epochs=0), new_storage(tmp_path / "s"),
                    training_data(pairs))
    text = caplog.text
    assert "4 example(s) are made only of characters" in text and "react_love" in text
    assert "never predicted: react_love" in text
    assert "react_love" not in clf.model.labels and len(clf.model.texts) == len(toy_corpus()[0])


def test_unreadable_message_gets_no_confident_intent(emoji_bot):
    for message in parse(emoji_bot, ["😡", "🙈🙉", "谢谢"]):
        assert message.get("intent")["confidence"] == 0.0
        assert all(r["confidence"] == 0.0 for r in message.get("intent_ranking"))
    readable = parse(emoji_bot, ["hello there 😡"])[0]
    assert readable.get("intent")["name"] == "greet" and readable.get("intent")["confidence"] > 0


def test_model_predict_withholds_unreadable_too(emoji_bot):
    confidences, in_scope, _ = emoji_bot.model.predict(["😡", "where is my order"])
    assert float(confidences[0].max()) == 0.0 and float(in_scope[0]) == 0.0
    assert float(confidences[1].max()) > 0.0


def test_only_unreadable_examples_skip_training(tiny_encoder_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="rasa_meta.component"):
        clf = train(make_config(tiny_encoder_dir, epochs=0), new_storage(tmp_path / "s"),
                    training_data([(e, "react") for e in EMOJI]))
    assert not clf.model.is_trained and "no readable intent examples" in caplog.text


def test_check_data_reports_unreadable_examples(encoder):
    texts, labels = toy_corpus()
    report = build_overlap_report(texts + EMOJI[:2], labels + ["react_love"] * 2, encoder=encoder)
    assert report.unreadable_examples == {"react_love": EMOJI[:2]}
    assert report.has_findings
    assert any("made only of characters the encoder does not know" in line
               for line in report.summary_lines())
    assert report.to_dict()["unreadable_examples"] == {"react_love": EMOJI[:2]}


# --- languages ----------------------------------------------------------------------------------


def training_context(language):
    """The execution context `rasa train` gives: the NLU data node carries the language."""
    node = SchemaNode(needs={}, uses=NLUTrainingDataProvider, constructor_name="create",
                      fn="provide", config={"language": language, "persist": False})
    return ExecutionContext(GraphSchema({"nlu_training_data_provider": node}), "m")


def test_bot_language_is_read_from_the_training_graph():
    assert bot_language(training_context("zh")) == "zh"
    assert bot_language(ExecutionContext(GraphSchema({}), "m")) is None


def test_english_only_encoders(tiny_encoder_dir):
    assert is_english_only("default") and is_english_only("minilm") and is_english_only(None)
    assert is_english_only("sentence-transformers/all-MiniLM-L6-v2")
    assert not is_english_only(str(tiny_encoder_dir))
    assert not is_english_only("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2")


@pytest.mark.parametrize("language,warns", [("zh", True), ("de", True), ("en", False),
                                            ("en-US", False), (None, False)])
def test_non_english_bot_with_the_default_encoder_warns_once(tmp_path, monkeypatch, language,
                                                             warns):
    monkeypatch.setattr(component, "_warned_languages", set())
    config = {**MetaIntentClassifier.get_default_config(), "encoder": "default"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            MetaIntentClassifier.create(config, new_storage(tmp_path / "s"), Resource("x"),
                                        training_context(language))
    ours = [w for w in caught if "English-only" in str(w.message)]
    assert len(ours) == (1 if warns else 0)
    if warns:
        assert f"language is '{language}'" in str(ours[0].message)
        assert "encoder:" in str(ours[0].message) and "--base-model" in str(ours[0].message)


def test_non_english_bot_with_its_own_encoder_does_not_warn(tiny_encoder_dir, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(component, "_warned_languages", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        MetaIntentClassifier.create(make_config(tiny_encoder_dir), new_storage(tmp_path / "s"),
                                    Resource("x"), training_context("zh"))
    assert not [w for w in caught if "English-only" in str(w.message)]


# --- what `rasa-meta threshold` prints ----------------------------------------------------------


@pytest.mark.slow
def test_threshold_command_prints_its_result_without_rasa_debug_lines(tiny_encoder_dir, tmp_path,
                                                                      capfd):
    import yaml
    from rasa.model_training import train_nlu

    from rasa_meta.tooling.cli import main
    from tests.rasa_helpers import training_data

    (tmp_path / "nlu.yml").write_text(training_data().nlu_as_yaml())
    config = {"recipe": "default.v1", "language": "en", "assistant_id": "t", "policies": [],
              "pipeline": [{"name": "rasa_meta.MetaIntentClassifier",
                            "encoder": str(tiny_encoder_dir), "epochs": 0}]}
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    model = train_nlu(str(tmp_path / "config.yml"), str(tmp_path / "nlu.yml"),
                      str(tmp_path / "models"), fixed_model_name="nlu")
    (tmp_path / "oos.txt").write_text("what is the capital of peru\nzzz qqq\n")
    capfd.readouterr()
    code = main(["threshold", "--model", model, "--in-scope", str(tmp_path / "nlu.yml"),
                 "--out-of-scope", str(tmp_path / "oos.txt"),
                 "--output-dir", str(tmp_path / "out")])
    out, err = capfd.readouterr()
    assert code == 0 and "config.yml:  - name: FallbackClassifier" in out
    assert "debug" not in out + err, (out + err)[-2000:]

"""MetaIntentClassifier as Rasa runs it: train -> process -> persist -> load, config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import torch
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from rasa_meta import __version__
from rasa_meta.component import MetaIntentClassifier
from rasa_meta.runtime.model import FewShotConfig
from tests.conftest import TOY_DATA, toy_corpus
from tests.rasa_helpers import (
    context,
    load,
    make_config,
    new_storage,
    parse,
    train,
    training_data,
)

QUERIES = ["hello there", "where is my order", "refund please", "see you later", "xyz"]


@pytest.fixture
def storage(tmp_path: Path) -> LocalModelStorage:
    return new_storage(tmp_path / "storage")


@pytest.fixture
def config(tiny_encoder_dir) -> Dict[str, Any]:
    return make_config(tiny_encoder_dir)


@pytest.fixture(scope="module")
def trained(tiny_encoder_dir, tmp_path_factory) -> Tuple[Dict[str, Any], LocalModelStorage,
                                                         MetaIntentClassifier]:
    """One classifier trained with the default config, for the tests that only read it:
    (config, storage it persisted to, classifier)."""
    config = make_config(tiny_encoder_dir)
    storage = new_storage(tmp_path_factory.mktemp("component") / "storage")
    return config, storage, train(config, storage)


def ranked(messages: List[Message]) -> List[List[Tuple[str, float]]]:
    return [[(r["name"], r["confidence"]) for r in m.get("intent_ranking")] for m in messages]


def test_train_process_persist_load_identical(trained):
    config, storage, clf = trained
    before = parse(clf, QUERIES)
    loaded = load(config, storage)
    after = parse(loaded, QUERIES)
    for a, b in zip(before, after):
        assert a.get("intent") == b.get("intent")
        assert a.get("intent_ranking") == b.get("intent_ranking")


def test_training_examples_are_recognised(trained):
    _, _, clf = trained
    texts, labels = toy_corpus()
    predicted = [m.get("intent")["name"] for m in parse(clf, texts)]
    assert sum(p == g for p, g in zip(predicted, labels)) / len(labels) >= 0.9


def test_output_format_like_diet(trained):
    _, _, clf = trained
    for message in parse(clf, QUERIES):
        intent, ranking = message.get("intent"), message.get("intent_ranking")
        assert intent == ranking[0]
        assert set(intent) == {"name", "confidence"}
        assert all(type(r["confidence"]) is float for r in ranking)
        confs = [r["confidence"] for r in ranking]
        assert confs == sorted(confs, reverse=True)
        assert all(0.0 <= c <= 1.0 for c in confs)
        assert "intent" in message.as_dict(only_output_properties=True)


def test_full_ranking_sums_to_one_without_oos_scaling(config, storage):
    clf = train({**config, "ranking_length": 0, "out_of_scope_detection": False}, storage)
    for message in parse(clf, QUERIES):
        ranking = message.get("intent_ranking")
        assert len(ranking) == len(TOY_DATA)
        assert abs(sum(r["confidence"] for r in ranking) - 1.0) < 1e-5


def test_with_oos_scaling_ranking_sums_to_in_scope_probability(trained):
    config, storage, _ = trained  # ranking_length and explain only act at parse time
    clf = load({**config, "ranking_length": 0, "explain": True}, storage)
    for message in parse(clf, QUERIES):
        total = sum(r["confidence"] for r in message.get("intent_ranking"))
        p_in = message.get("intent_explanation")["in_scope_probability"]
        assert total <= 1.0 + 1e-6 and abs(total - p_in) < 1e-5


@pytest.mark.parametrize("length", [1, 2, 3])
def test_ranking_length_honoured(trained, length):
    config, storage, _ = trained
    clf = load({**config, "ranking_length": length}, storage)
    assert all(len(m.get("intent_ranking")) == length for m in parse(clf, QUERIES))


def test_same_seed_same_output(config, tmp_path):
    a = train({**config, "epochs": 1}, new_storage(tmp_path / "a"))
    b = train({**config, "epochs": 1}, new_storage(tmp_path / "b"))
    assert [m.get("intent_ranking") for m in parse(a, QUERIES)] == [
        m.get("intent_ranking") for m in parse(b, QUERIES)
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_or_whitespace_text_gives_no_intent(trained, text):
    _, _, clf = trained
    message = parse(clf, [text, "hello there"])
    assert message[0].get("intent") == {"name": None, "confidence": 0.0}
    assert message[0].get("intent_ranking") == []
    assert message[1].get("intent")["name"] is not None


def test_text_longer_than_max_length_is_truncated(config, storage):
    clf = train({**config, "max_length": 8}, storage)
    (message,) = parse(clf, ["where is my order " * 3000])
    assert message.get("intent")["name"] in TOY_DATA


def test_no_examples_skips_training_and_predicts_none(config, storage, caplog):
    data = TrainingData([Message(data={"text": "  ", "intent": "greet"})])
    clf = train(config, storage, data=data)
    assert "no intent examples" in caplog.text
    assert parse(clf, ["hello"])[0].get("intent") == {"name": None, "confidence": 0.0}
    loaded = load(config, storage)  # nothing was persisted: an untrained instance
    assert parse(loaded, ["hello"])[0].get("intent") == {"name": None, "confidence": 0.0}


def test_single_intent_is_predicted_with_full_confidence(config, storage):
    pairs = [(t, "greet") for t in TOY_DATA["greet"]]
    clf = train(config, storage, data=training_data(pairs))
    (message,) = parse(clf, ["hello there"])
    assert message.get("intent") == {"name": "greet", "confidence": 1.0}


def test_frozen_encoder_is_referenced_not_copied(config, storage, tmp_path):
    train({**config, "epochs": 0}, storage)
    files = {p.name for p in (tmp_path / "storage").rglob("*") if p.is_file()}
    assert "model.json" in files and "head.safetensors" in files
    assert "encoder_delta.safetensors" not in files


def test_default_config_adapts_the_encoder_at_train_time(config):
    defaults = MetaIntentClassifier.get_default_config()
    assert defaults["epochs"] >= 1 and defaults["finetune_layers"] == -1


def test_inner_loop_stores_changed_weights_and_reloads_them(config, storage, tmp_path):
    clf = train({**config, "epochs": 2, "finetune_layers": 1}, storage)
    files = {p.name for p in (tmp_path / "storage").rglob("*") if p.is_file()}
    assert "encoder_delta.safetensors" in files
    loaded = load(config, storage)
    a = [m.get("intent_ranking") for m in parse(clf, QUERIES)]
    b = [m.get("intent_ranking") for m in parse(loaded, QUERIES)]
    assert a == b
    plain = train({**config, "epochs": 0}, new_storage(tmp_path / "plain"))
    assert [m.get("intent_ranking") for m in parse(plain, QUERIES)] != a


@pytest.mark.parametrize("objective", ["prototypical", "contrastive"])
def test_inner_loop_over_every_block_keeps_token_embeddings_and_stores_float16(
    config, storage, tmp_path, objective
):
    from safetensors.torch import load_file

    clf = train({**config, "epochs": 1, "finetune_layers": -1,
                 "finetune_objective": objective}, storage)
    (delta_file,) = (tmp_path / "storage").rglob("encoder_delta.safetensors")
    delta = load_file(str(delta_file))
    assert {".layer.0." in n or ".layer.1." in n for n in delta} == {True}
    assert any(".layer.0." in n for n in delta) and any(".layer.1." in n for n in delta)
    assert not any("embeddings" in n for n in delta)
    assert {t.dtype for t in delta.values()} == {torch.float16}
    loaded = load(config, storage)
    assert [m.get("intent_ranking") for m in parse(loaded, QUERIES)] == [
        m.get("intent_ranking") for m in parse(clf, QUERIES)]


def test_finetune_adapts_the_loaded_model_to_new_examples(config, storage, tmp_path):
    train({**config, "epochs": 1}, storage)
    loaded = MetaIntentClassifier.load(
        {**config, "epochs": 1}, storage, Resource("clf"), context(finetuning=True)
    )
    texts, labels = toy_corpus()
    pairs = list(zip(texts, labels)) + [(t, "thanks") for t in ["thanks", "thank you a lot"]]
    out_storage = new_storage(tmp_path / "next")
    loaded._model_storage = out_storage
    loaded.train(training_data(pairs))
    assert "thanks" in loaded.model.labels
    assert parse(loaded, ["thank you a lot"])[0].get("intent")["name"] == "thanks"


def test_training_data_without_text_is_ignored(config, storage):
    texts, labels = toy_corpus()
    messages = [Message(data={"text": t, "intent": i}) for t, i in zip(texts, labels)]
    messages.append(Message(data={"intent": "ghost"}))  # e.g. a story-only intent
    clf = train(config, storage, data=TrainingData(messages))
    assert "ghost" not in clf.model.labels


@pytest.mark.parametrize(
    "override, key",
    [
        ({"device": "tpu"}, "device"),
        ({"ranking_length": -1}, "ranking_length"),
        ({"encoder": "./does/not/exist"}, "encoder"),
        ({"head": "knn"}, "head"),
        ({"temperature": 0}, "temperature"),
        ({"epochs": -2}, "epochs"),
        ({"finetune_objective": "triplet"}, "finetune_objective"),
        ({"finetune_layers": -3}, "finetune_layers"),
    ],
)
def test_invalid_config_names_the_key(config, storage, override, key):
    with pytest.raises(InvalidConfigException, match=key):
        MetaIntentClassifier.create({**config, **override}, storage, Resource("x"), context())


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("head", "knn", "'head' must be one of"),
        ("finetune_layers", -3, "'finetune_layers' must be a whole number >= 0, or -1"),
        ("finetune_objective", "triplet", "'finetune_objective' must be one of"),
        ("batch_size", 0, "'batch_size' must be a whole number >= 1"),
        ("finetune_learning_rate", 0, "'finetune_learning_rate' must be a positive number"),
        ("encoder_prompt", 3, "'encoder_prompt' must be text"),
        ("oos_quantile", 0.7, "'oos_quantile' must be between 0 and 0.5"),
        ("device", "tpu", "device 'tpu' is unknown"),
        ("encoder", "./does/not/exist", "does not exist"),
    ],
)
def test_validation_lives_with_the_config_dataclass(tiny_encoder_dir, field, value, message):
    FewShotConfig(encoder=str(tiny_encoder_dir)).validate()
    config = FewShotConfig(**{"encoder": str(tiny_encoder_dir), field: value})
    with pytest.raises(ValueError, match=message):
        config.validate()
    if field == "encoder":  # the path is only checked where the encoder is needed
        config.validate(check_encoder=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_config_error(config, storage):
    with pytest.raises(InvalidConfigException, match="CUDA is not available"):
        MetaIntentClassifier.create({**config, "device": "cuda"}, storage, Resource("x"), context())


def test_fingerprint_addon_has_version_and_encoder_identity(config, tmp_path, tiny_encoder_dir):
    import shutil

    from rasa_meta.runtime.encoder import encoder_fingerprint

    addon = MetaIntentClassifier.fingerprint_addon(config)
    assert addon.startswith(f"rasa-meta=={__version__}|")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_encoder_dir, copy)
    same_weights = MetaIntentClassifier.fingerprint_addon({**config, "encoder": str(copy)})
    assert same_weights.split("@")[1] == addon.split("@")[1]  # identity is the content
    config_file = copy / "config.json"
    config_file.write_text(config_file.read_text().replace("32", "32 "))
    encoder_fingerprint.cache_clear()
    changed = MetaIntentClassifier.fingerprint_addon({**config, "encoder": str(copy)})
    assert changed.split("@")[1] != addon.split("@")[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_trained_on_gpu_loads_and_runs_on_cpu(config, storage):
    gpu = train({**config, "device": "cuda", "epochs": 1}, storage)
    assert gpu.model.encoder.device.type == "cuda"
    expected = ranked(parse(gpu, QUERIES))
    cpu = load({**config, "device": "cpu"}, storage)
    assert cpu.model.encoder.device.type == "cpu"
    got = ranked(parse(cpu, QUERIES))
    assert [[name for name, _ in row] for row in got] == [
        [name for name, _ in row] for row in expected
    ]
    for row, want in zip(got, expected):  # the same confidences, to float rounding
        assert [c for _, c in row] == pytest.approx([c for _, c in want], abs=1e-4)

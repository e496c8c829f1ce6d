"""Hardening (issue 6): hostile parse-time input, degenerate training data, damaged artifacts,
determinism, thread safety and bounded encoder batches. All on the tiny random encoder."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from rasa_meta.component import MetaIntentClassifier
from rasa_meta.runtime.encoder import SentenceEncoder, clean_text
from rasa_meta.runtime.errors import ModelLoadError
from rasa_meta.runtime.persistence import FORMAT_VERSION
from tests.conftest import REPO, TOY_DATA, toy_corpus
from tests.rasa_helpers import (
    context,
    load,
    make_config,
    new_storage,
    parse,
    train,
    train_with_own_encoder,
    training_data,
)

QUERIES = ["hello there", "where is my order", "refund please", "see you later", "xyz"]

# --- helpers -----------------------------------------------------------------------------------


def toy_pairs():
    texts, labels = toy_corpus()
    return list(zip(texts, labels))


def rankings(messages: List[Message]):
    return [m.get("intent_ranking") for m in messages]


def assert_well_formed(message: Message, labels=None) -> None:
    intent = message.get("intent")
    ranking = message.get("intent_ranking")
    assert isinstance(intent, dict) and set(intent) == {"name", "confidence"}
    assert intent["name"] is None or isinstance(intent["name"], str)
    assert type(intent["confidence"]) is float
    assert 0.0 <= intent["confidence"] <= 1.0 and not math.isnan(intent["confidence"])
    assert isinstance(ranking, list)
    for item in ranking:
        assert isinstance(item["name"], str)
        assert type(item["confidence"]) is float and 0.0 <= item["confidence"] <= 1.0
    if intent["name"] is not None:
        assert ranking and ranking[0] == intent
        if labels is not None:
            assert intent["name"] in labels
    else:
        assert ranking == [] and intent["confidence"] == 0.0
    json.dumps(message.as_dict(only_output_properties=True))  # what the HTTP API returns


@pytest.fixture(scope="module")
def clf(tiny_encoder_dir, tmp_path_factory) -> MetaIntentClassifier:
    """One trained and reloaded classifier shared by the read-only tests of this module."""
    storage = new_storage(tmp_path_factory.mktemp("hardening-storage"))
    config = make_config(tiny_encoder_dir)
    train(config, storage)
    return load(config, storage)


@pytest.fixture
def config(tiny_encoder_dir) -> Dict[str, Any]:
    return make_config(tiny_encoder_dir)


@pytest.fixture
def storage(tmp_path) -> LocalModelStorage:
    return new_storage(tmp_path / "storage")


# --- 1. parse-time input ------------------------------------------------------------------------

BAD_INPUTS = {
    "empty": "",
    "space": " ",
    "whitespace": "\n\t \r\n\u3000",
    "10k_chars": "where is my order " * 600,
    "10k_no_spaces": "x" * 12_000,
    "10k_emoji": "😀" * 10_001,
    "emoji": "😀🔥👍🏽 🇺🇸 👨‍👩‍👧",
    "mixed_scripts": "hello مرحبا שלום 你好 Привет नमस्ते",
    "arabic": "أين طلبي؟",
    "hebrew": "איפה ההזמנה שלי?",
    "rtl_override": "\u202eredro ym si erehw\u202c",
    "control": "\x00\x01\x07\x1b[31mred\x1b[0m\x7f",
    "nul_only": "\x00",
    "zero_width": "hel\u200blo\u200c\u200d\ufeff",
    "zero_width_only": "\u200b\u200c\u200d\ufeff\u2060",
    "combining": "Z̴̡̛a̷l̶g̸o̵ t̷e̸x̶t",
    "lone_surrogate": "\ud800",
    "lone_low_surrogate": "refund \udfff please",
    "surrogate_pair": "\ud83d\ude00 hello",
    "intent_shortcut": "/greet",
    "intent_shortcut_entities": '/greet{"name": "Ana"}',
    "retrieval_shortcut": "/faq/ask_name",
    "slash_only": "/",
    "newlines": "\n" * 5000 + "hi",
}


@pytest.mark.parametrize("text", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_gets_a_well_formed_parse(clf, text):
    (message,) = parse(clf, [text])
    assert_well_formed(message, clf.model.labels)
    if not text.strip():
        assert message.get("intent")["name"] is None
    else:
        assert message.get("intent")["name"] in TOY_DATA


def test_one_batch_mixing_every_bad_input(clf):
    texts = list(BAD_INPUTS.values()) + ["hello there", "refund please"]
    batch = parse(clf, texts)
    assert [m.get("text") for m in batch] == texts  # order kept, nothing dropped
    for message, text in zip(batch, texts):
        assert_well_formed(message, clf.model.labels)
        (alone,) = parse(clf, [text])
        assert message.get("intent")["name"] == alone.get("intent")["name"]
        assert message.get("intent")["confidence"] == pytest.approx(
            alone.get("intent")["confidence"], abs=1e-4
        )


def test_messages_without_text_get_no_intent(clf):
    messages = clf.process([Message(data={}), Message(data={"text": None}), Message()])
    for message in messages:
        assert message.get("intent") == {"name": None, "confidence": 0.0}


def test_untrained_component_parses_bad_input(config, storage):
    untrained = MetaIntentClassifier.create(config, storage, Resource("x"), context())
    for message in parse(untrained, list(BAD_INPUTS.values())):
        assert_well_formed(message)


@pytest.mark.parametrize(
    "raw, clean",
    [("ok", "ok"), ("\ud800", "\ufffd"), ("a\udfffb", "a\ufffdb"), ("\ud83d\ude00", "😀"),
     ("", ""), ("مرحبا", "مرحبا")],
)
def test_clean_text_replaces_only_lone_surrogates(raw, clean):
    assert clean_text(raw) == clean
    clean_text(raw).encode("utf-8")


# Any code point (lone surrogates included), with the troublesome kinds drawn often enough
# to matter in 50 examples: surrogates, control and format characters (zero-width, RTL marks),
# unusual spaces, Hebrew/Arabic and emoji. (Joined from a list: `st.text(alphabet=one_of(..))`
# merges the alphabets and silently drops the surrogates.)
ANY_CHAR = st.one_of(
    st.characters(blacklist_categories=()),
    st.characters(whitelist_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp")),
    st.characters(min_codepoint=0x0590, max_codepoint=0x06FF),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF),
)
ANY_TEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=300),
    st.lists(ANY_CHAR, max_size=300).map("".join),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ANY_TEXT)
def test_property_any_string_gets_a_well_formed_parse(clf, text):
    (message,) = parse(clf, [text])
    assert_well_formed(message, clf.model.labels)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(ANY_TEXT, min_size=1, max_size=12))
def test_property_any_batch_gets_well_formed_parses(clf, texts):
    batch = parse(clf, texts)
    assert len(batch) == len(texts)
    for message in batch:
        assert_well_formed(message, clf.model.labels)


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(ANY_TEXT, min_size=1, max_size=8))
def test_property_encoder_gives_finite_unit_vectors(clf, texts):
    emb = clf.model.encoder.encode(texts, batch_size=3)
    assert emb.shape == (len(texts), clf.model.encoder.dim)
    assert bool(emb.isfinite().all())
    assert emb.norm(dim=1).sub(1).abs().max() < 1e-4


# --- 2. degenerate training data ----------------------------------------------------------------


def _many_intents():
    return [(f"request number {i} about topic {i * 7 % 13}", f"intent_{i:03d}") for i in range(520)]


def _imbalanced():
    big = [(f"where is my order number {i}", "order_status") for i in range(300)]
    return big + [("hello there", "greet"), ("bye bye", "goodbye"), ("refund please", "refund")]


DATASETS = {
    "one_intent": [(t, "greet") for t in TOY_DATA["greet"]],
    "one_example_per_intent": [(ts[0], name) for name, ts in TOY_DATA.items()],
    "imbalanced_300_vs_1": _imbalanced(),
    "520_intents": _many_intents(),
    "non_ascii_names": [
        ("how do i pay", "支払い"),
        ("pay with card", "支払い"),
        ("when do you open", "café_hours"),
        ("opening hours please", "café_hours"),
        ("где мой заказ", "заказ"),
        ("статус заказа", "заказ"),
    ],
}


@pytest.mark.parametrize("epochs", [0, 1])
@pytest.mark.parametrize("name", list(DATASETS))
def test_degenerate_training_data_trains_persists_and_predicts(config, tmp_path, name, epochs):
    if name == "520_intents" and epochs:
        pytest.skip("the inner loop over 520 intents adds time without adding coverage")
    pairs = DATASETS[name]
    storage = new_storage(tmp_path / "s")
    clf = train({**config, "epochs": epochs}, storage, training_data(pairs))
    labels = sorted({label for _, label in pairs})
    assert clf.model.labels == labels
    queries = [pairs[0][0], pairs[-1][0], "something else entirely", ""]
    before = parse(clf, queries)
    for message in before:
        assert_well_formed(message, labels)
    assert before[0].get("intent")["name"] in labels
    loaded = load({**config, "epochs": epochs}, storage)
    assert loaded.model.labels == labels
    assert rankings(parse(loaded, queries)) == rankings(before)


def test_zero_intents_warns_and_predicts_nothing(config, storage, caplog):
    with caplog.at_level(logging.WARNING):
        clf = train(config, storage, TrainingData())
    assert "no intent examples" in caplog.text
    for message in parse(clf, ["hello", ""]):
        assert message.get("intent") == {"name": None, "confidence": 0.0}
    # nothing was persisted: loading gives an untrained instance, not an error
    assert parse(load(config, storage), ["hello"])[0].get("intent")["name"] is None


def test_same_sentence_under_two_intents_is_warned_about(config, storage, caplog):
    pairs = toy_pairs() + [("where is my order", "refund")]
    with caplog.at_level(logging.WARNING, logger="rasa_meta.component"):
        clf = train(config, storage, training_data(pairs))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    duplicate = [w for w in warnings if "where is my order" in w]
    assert duplicate, warnings
    assert "order_status" in duplicate[0] and "refund" in duplicate[0]
    assert_well_formed(parse(clf, ["where is my order"])[0], clf.model.labels)


RETRIEVAL_NLU = """
version: "3.1"
nlu:
- intent: greet
  examples: |
    - hello there
    - hi
    - good morning
- intent: faq/ask_name
  examples: |
    - what is your name
    - who are you
    - what should i call you
- intent: faq/ask_hours
  examples: |
    - when are you open
    - what are your opening hours
    - are you open on sunday
"""


def test_retrieval_intents_predict_the_base_intent_like_diet(config, storage):
    data = RasaYAMLReader().reads(RETRIEVAL_NLU)
    faq = [m for m in data.intent_examples if m.get("intent") == "faq"]
    # Rasa keeps the base intent in `intent` and the full key in `intent_response_key`; the
    # model learns each key (a retrieval intent is many unrelated questions) and, like DIET,
    # predicts the base intent `faq`; a response selector picks the answer.
    assert {m.get("intent_response_key") for m in faq} == {"faq/ask_name", "faq/ask_hours"}
    clf = train(config, storage, data)
    assert sorted(clf.model.labels) == ["faq/ask_hours", "faq/ask_name", "greet"]
    for message in parse(clf, ["what is your name", "when are you open", "/faq/ask_name"]):
        assert_well_formed(message, ["faq", "greet"])
        assert all("/" not in r["name"] for r in message.get("intent_ranking"))


# --- 3. damaged artifacts -----------------------------------------------------------------------


def _model_dir(root: Path) -> Path:
    (model_json,) = root.rglob("model.json")
    return model_json.parent


@pytest.fixture(scope="module")
def trained_once(tiny_encoder_dir, tmp_path_factory) -> Path:
    """A model storage trained once for the module (with an inner-loop delta)."""
    root = tmp_path_factory.mktemp("hardening-trained") / "s"
    train(make_config(tiny_encoder_dir, epochs=1), new_storage(root))
    return root


@pytest.fixture
def trained_dir(config, trained_once, tmp_path):
    """(config, storage, directory of the persisted model): a fresh copy of the module's
    trained model, which the test may damage."""
    shutil.copytree(trained_once, tmp_path / "s")
    return {**config, "epochs": 1}, new_storage(tmp_path / "s"), _model_dir(tmp_path / "s")


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage\xff" * 7)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "deleted"])
@pytest.mark.parametrize(
    "file", ["head.safetensors", "encoder_delta.safetensors", "model.json"]
)
def test_damaged_model_file_is_a_clear_error_naming_it(trained_dir, file, how):
    config, storage, directory = trained_dir
    _corrupt(directory / file, how)
    if file == "encoder_delta.safetensors" and how == "deleted":
        # an optional file: without it the frozen encoder is used (as for epochs: 0)
        assert load(config, storage).model.is_trained
        return
    with pytest.raises(ModelLoadError, match=file.replace(".", r"\.")) as info:
        load(config, storage)
    assert "rasa train" in str(info.value)


@pytest.mark.parametrize("drop", ["labels", "config", "in_scope", "temperature", "texts"])
def test_model_json_missing_a_key_names_the_file(trained_dir, drop):
    config, storage, directory = trained_dir
    meta = json.loads((directory / "model.json").read_text())
    del meta[drop]
    (directory / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"model\.json"):
        load(config, storage)


@pytest.mark.parametrize("change", ["fewer_labels", "extra_label"])
def test_head_not_matching_model_json_is_a_clear_error(trained_dir, change):
    config, storage, directory = trained_dir
    meta = json.loads((directory / "model.json").read_text())
    if change == "fewer_labels":  # fewer intents than the stored examples refer to
        meta["labels"] = meta["labels"][:1]
    else:  # more intents than the refined head has vectors for (head_steps > 0)
        assert config["head_steps"] > 0
        meta["labels"] = meta["labels"] + ["zzz_extra"]
    (directory / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"head\.safetensors"):
        load(config, storage)


def test_missing_encoder_path_at_load_names_path_and_fix(tiny_encoder_dir, tmp_path):
    encoder, config, storage, _ = train_with_own_encoder(tiny_encoder_dir, tmp_path)
    shutil.rmtree(encoder)
    with pytest.raises(ModelLoadError) as info:
        load(config, storage)
    message = str(info.value)
    assert str(encoder) in message
    assert "config.yml" in message and "rasa train" in message


def test_encoder_replaced_by_another_size_is_a_clear_error(tiny_encoder_dir, tmp_path):
    from transformers import BertConfig, BertModel

    encoder, config, storage, _ = train_with_own_encoder(tiny_encoder_dir, tmp_path)
    small = BertConfig.from_pretrained(str(encoder))
    small.hidden_size, small.intermediate_size = 16, 32
    BertModel(small).save_pretrained(str(encoder))
    with pytest.raises(ModelLoadError, match="dimensional"):
        load(config, storage)


def _rewrite_meta(directory: Path, **changes) -> None:
    meta = json.loads((directory / "model.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (directory / "model.json").write_text(json.dumps(meta))


def test_model_from_older_plugin_without_format_field_loads(trained_dir):
    config, storage, directory = trained_dir
    expected = rankings(parse(load(config, storage), ["hello there", "refund please"]))
    _rewrite_meta(directory, format_version=None, rasa_meta_version="0.0.1")
    assert rankings(parse(load(config, storage), ["hello there", "refund please"])) == expected


def test_saved_model_records_plugin_and_format_version(trained_dir):
    from rasa_meta import __version__

    _, _, directory = trained_dir
    meta = json.loads((directory / "model.json").read_text())
    assert meta["rasa_meta_version"] == __version__
    assert meta["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize("written", ["2.0", "1.99", "0.1", "garbage"])
def test_unknown_model_format_names_the_version_to_install(trained_dir, written):
    config, storage, directory = trained_dir
    _rewrite_meta(directory, format_version=written, rasa_meta_version="7.3.1")
    with pytest.raises(ModelLoadError) as info:
        load(config, storage)
    assert "rasa-meta==7.3.1" in str(info.value) and "model.json" in str(info.value)


# --- 4. determinism ------------------------------------------------------------------------------

_TRAIN_IN_FRESH_PROCESS = """
import json, sys
from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
texts, labels, queries, encoder = json.loads(sys.stdin.read())
cfg = FewShotConfig(encoder=encoder, device="cpu", epochs=1, random_seed=7)
from rasa_meta.training.adapt import adapt
model = adapt(FewShotIntentModel(cfg), texts, labels)
probs, in_scope, _ = model.predict(queries)
print(json.dumps({"probs": probs.tolist(), "in_scope": in_scope.tolist(),
                  "delta": sorted((k, float(v.double().sum())) for k, v in model.delta.items())}))
"""


@pytest.mark.slow
def test_same_seed_identical_predictions_across_fresh_processes(tiny_encoder_dir):
    texts, labels = toy_corpus()
    payload = json.dumps([texts, labels, QUERIES, str(tiny_encoder_dir)])

    def run(hash_seed: str):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "CUDA_VISIBLE_DEVICES": ""}
        return subprocess.Popen(
            [sys.executable, "-c", _TRAIN_IN_FRESH_PROCESS], cwd=REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    procs = [run("1"), run("2")]
    outputs = [p.communicate(payload, timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert first["delta"], "the inner loop should have changed some weights"
    # Two processes on one machine run the same kernels; the tolerance only absorbs what a
    # process's thread scheduling may change in the last bits, far below any seed effect.
    assert [k for k, _ in first["delta"]] == [k for k, _ in second["delta"]]
    for key in ("probs", "in_scope"):
        assert np.allclose(first[key], second[key], rtol=0, atol=1e-6), key
    assert np.allclose([v for _, v in first["delta"]], [v for _, v in second["delta"]],
                       rtol=1e-6, atol=1e-6)


def test_same_seed_identical_artifacts_and_predictions_in_component(config, tmp_path):
    config = {**config, "epochs": 1, "device": "cpu"}
    a = train(config, new_storage(tmp_path / "a"))
    b = train(config, new_storage(tmp_path / "b"))
    assert rankings(parse(a, QUERIES)) == rankings(parse(b, QUERIES))
    dir_a, dir_b = _model_dir(tmp_path / "a"), _model_dir(tmp_path / "b")
    for name in ("head.safetensors", "encoder_delta.safetensors", "model.json"):
        assert (dir_a / name).read_bytes() == (dir_b / name).read_bytes(), name


# --- 5. thread safety ---------------------------------------------------------------------------


def test_concurrent_process_matches_sequential_and_never_reloads(clf, monkeypatch):
    batches = [
        list(BAD_INPUTS.values())[i::4] + [QUERIES[i % len(QUERIES)]] for i in range(4)
    ] + [[q] for q in QUERIES] + [QUERIES * 3]
    batches = batches * 3
    expected = [rankings(parse(clf, batch)) for batch in batches]

    encoder = clf.model.encoder

    def no_reload(*args, **kwargs):
        raise AssertionError("SentenceEncoder.from_pretrained called while serving")

    monkeypatch.setattr(SentenceEncoder, "from_pretrained", classmethod(no_reload))

    active, peak = [0], [0]
    guard = threading.Lock()
    original_embed = clf.model.embed

    def counting_embed(texts):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return original_embed(texts)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(clf.model, "embed", counting_embed)
    start = threading.Barrier(8)

    def work(i: int):
        if i < 8:
            start.wait(timeout=30)
        return i, rankings(parse(clf, batches[i]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(pool.map(work, range(len(batches))))
    assert [results[i] for i in range(len(batches))] == expected
    assert peak[0] == 1, "inference must be serialised by the component's lock"
    assert clf.model.encoder is encoder


# --- 6. bounded encoder batches -----------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [64, 25])
def test_large_process_call_is_encoded_in_bounded_batches(clf, monkeypatch, batch_size):
    encoder = clf.model.encoder
    seen: List[int] = []
    forward = encoder.forward

    def recording_forward(texts):
        seen.append(len(texts))
        return forward(texts)

    monkeypatch.setattr(encoder, "forward", recording_forward)
    monkeypatch.setattr(clf.model.config, "batch_size", batch_size)
    texts = [f"where is my order {i}" if i % 10 else "" for i in range(1000)]
    messages = parse(clf, texts)
    assert len(messages) == 1000
    assert seen and max(seen) <= batch_size
    assert sum(seen) == sum(1 for t in texts if t.strip())  # empty ones are never encoded
    assert len(seen) == math.ceil(sum(seen) / batch_size)

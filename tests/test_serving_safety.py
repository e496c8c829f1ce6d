"""Serving that needs no tuning and never serves a stale model: the encoder's fingerprint is
checked at load, relative encoder paths work from any directory, `num_threads`, and unknown
config keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.shared.data import TrainingType
from rasa.shared.exceptions import InvalidConfigException
from rasa.utils.common import override_defaults

import rasa_meta.component as component
from rasa_meta.component import MetaIntentClassifier
from rasa_meta.runtime.encoder import (
    SentenceEncoder,
    compute_encoder_fingerprint,
    encoder_fingerprint,
    same_encoder,
)
from rasa_meta.runtime.model import FewShotConfig, ModelLoadError
from tests.rasa_helpers import (
    context,
    load,
    make_config,
    new_storage,
    parse,
    train,
    train_with_own_encoder,
)

QUERIES = ["hello there", "where is my order", "refund please", "see you later", "xyz"]


def rankings(clf: MetaIntentClassifier):
    return [m.get("intent_ranking") for m in parse(clf, QUERIES)]


def model_json(storage_root: Path) -> Path:
    (path,) = storage_root.rglob("model.json")
    return path


def rewrite_meta(storage_root: Path, **changes: Any) -> None:
    path = model_json(storage_root)
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def new_weights_same_shape(encoder_dir: Path, seed: int = 1) -> None:
    """Replace the encoder's weights in place with others of the same shapes."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    BertModel(BertConfig.from_pretrained(str(encoder_dir))).save_pretrained(str(encoder_dir))


@pytest.fixture(autouse=True)
def no_recorded_thread_count(monkeypatch):
    """Each test starts as a fresh process would (conftest restores the threads after it)."""
    monkeypatch.setattr(component, "_threads_before_serving", None)


# --- 1. the encoder's fingerprint is checked at load ------------------------------------------


def test_encoder_with_new_weights_at_the_same_path_is_refused(tiny_encoder_dir, tmp_path):
    encoder, config, storage, _ = train_with_own_encoder(tiny_encoder_dir, tmp_path)
    trained_with = json.loads(model_json(tmp_path / "s").read_text())["encoder_fingerprint"]
    assert trained_with == encoder_fingerprint(str(encoder))  # now cached in this process

    new_weights_same_shape(encoder)  # same dimensions: only the fingerprint can tell
    current = compute_encoder_fingerprint(str(encoder))
    assert current != trained_with
    try:
        with pytest.raises(ModelLoadError) as info:
            load(config, storage)  # the stale cache entry must not hide the new weights
    finally:
        encoder_fingerprint.cache_clear()
    message = str(info.value)
    assert trained_with in message and current in message
    assert str(encoder) in message and "rasa train" in message


def test_unchanged_encoder_copied_elsewhere_still_matches(tiny_encoder_dir, tmp_path):
    a, b = tmp_path / "a" / "enc", tmp_path / "b" / "enc-renamed"
    shutil.copytree(tiny_encoder_dir, a)
    shutil.copytree(tiny_encoder_dir, b)
    fa, fb = compute_encoder_fingerprint(str(a)), compute_encoder_fingerprint(str(b))
    assert fa != fb and same_encoder(fa, fb)  # the directory name differs, the content not
    assert same_encoder("org/model@hub", "org/model@hub")
    assert not same_encoder("org/model@hub", "other/model@hub")
    new_weights_same_shape(b)
    assert not same_encoder(fa, compute_encoder_fingerprint(str(b)))


def test_model_saved_without_a_fingerprint_loads_as_before(tiny_encoder_dir, tmp_path):
    encoder, config, storage, _ = train_with_own_encoder(tiny_encoder_dir, tmp_path)
    rewrite_meta(tmp_path / "s", encoder_fingerprint=None, encoder_path=None)
    new_weights_same_shape(encoder)
    assert load(config, storage).model.is_trained


def test_hub_name_encoder_keeps_loading(tiny_encoder_dir, tmp_path, monkeypatch):
    config = make_config(tiny_encoder_dir)
    storage = new_storage(tmp_path / "s")
    expected = rankings(train(config, storage))
    hub = "some-org/some-model"
    meta = json.loads(model_json(tmp_path / "s").read_text())
    rewrite_meta(
        tmp_path / "s",
        config={**meta["config"], "encoder": hub},
        encoder_path=hub,
        encoder_fingerprint=f"{hub}@hub",
    )
    asked = []
    real = SentenceEncoder.from_pretrained.__func__

    def from_hub(cls, name_or_path=None, max_length=128, prompt=None):
        asked.append(name_or_path)
        assert name_or_path == hub
        return real(cls, str(tiny_encoder_dir), max_length, prompt)

    monkeypatch.setattr(SentenceEncoder, "from_pretrained", classmethod(from_hub))
    loaded = load(config, storage)
    assert asked == [hub]
    assert rankings(loaded) == expected


# --- 2. relative encoder paths work from wherever the model is served ----------------------------


@pytest.fixture
def relative_project(tiny_encoder_dir, tmp_path, monkeypatch):
    """A model trained from `project/` with `encoder: ./encoders/tiny`; (config, storage,
    project, rankings after training)."""
    project = tmp_path / "project"
    shutil.copytree(tiny_encoder_dir, project / "encoders" / "tiny")
    monkeypatch.chdir(project)
    config = make_config("./encoders/tiny")
    storage = new_storage(tmp_path / "storage")
    expected = rankings(train(config, storage))
    (tmp_path / "elsewhere").mkdir()
    return config, storage, project, expected


def test_relative_encoder_path_is_recorded_with_its_absolute_location(relative_project, tmp_path):
    _, _, project, _ = relative_project
    meta = json.loads(model_json(tmp_path / "storage").read_text())
    assert meta["config"]["encoder"] == "./encoders/tiny"  # as the user wrote it
    assert meta["encoder_path"] == str((project / "encoders" / "tiny").resolve())


def test_model_with_relative_encoder_path_is_served_from_another_directory(
    relative_project, tmp_path, monkeypatch
):
    config, storage, _, expected = relative_project
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(InvalidConfigException):  # the path does not resolve from here...
        MetaIntentClassifier.validate_config(config)
    loaded = load(config, storage)  # ...yet the model loads, from the recorded location
    assert rankings(loaded) == expected


def test_relative_encoder_path_is_found_from_a_moved_project(relative_project, tmp_path,
                                                            monkeypatch):
    config, storage, project, expected = relative_project
    moved = tmp_path / "moved"
    shutil.copytree(project, moved)
    shutil.rmtree(project)
    monkeypatch.chdir(moved)
    loaded = load(config, storage)
    assert Path(loaded.model.encoder_path) == (moved / "encoders" / "tiny").resolve()
    assert rankings(loaded) == expected


def test_changed_encoder_at_the_recorded_location_is_refused(relative_project, tmp_path,
                                                            monkeypatch):
    config, storage, project, _ = relative_project
    new_weights_same_shape(project / "encoders" / "tiny")
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ModelLoadError, match="fingerprint"):
        load(config, storage)


def test_relative_encoder_gone_from_both_places_names_paths_and_fix(
    relative_project, tmp_path, monkeypatch
):
    config, storage, project, _ = relative_project
    shutil.rmtree(project / "encoders")
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ModelLoadError) as info:
        load(config, storage)
    message = str(info.value)
    assert "./encoders/tiny" in message
    assert str((project / "encoders" / "tiny").resolve()) in message
    assert "rasa run" in message and "absolute path" in message and "rasa train" in message


# --- 3. num_threads ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, "many", "AUTO", 1.5, True, None])
def test_invalid_num_threads_is_a_config_error(tiny_encoder_dir, tmp_path, value):
    config = make_config(tiny_encoder_dir, num_threads=value)
    with pytest.raises(InvalidConfigException, match="num_threads.*'auto'"):
        MetaIntentClassifier.create(config, new_storage(tmp_path), Resource("x"), context())


@pytest.mark.parametrize("value", ["auto", 1, 3])
def test_valid_num_threads_is_accepted(tiny_encoder_dir, value):
    MetaIntentClassifier.validate_config(make_config(tiny_encoder_dir, num_threads=value))


def test_num_threads_is_applied_when_loaded_for_serving_only(tiny_encoder_dir, tmp_path):
    config = make_config(tiny_encoder_dir)
    storage = new_storage(tmp_path / "s")
    torch.set_num_threads(2)
    train(config, storage)
    assert torch.get_num_threads() == 2

    load({**config, "num_threads": 3}, storage)
    assert torch.get_num_threads() == 3
    load(config, storage)  # auto: one thread per serving process
    assert torch.get_num_threads() == 1

    # `rasa train --finetune` loads the component too, but to train: threads stay as they are
    MetaIntentClassifier.load(
        {**config, "num_threads": 3}, storage, Resource("clf"), context(finetuning=True)
    )
    assert torch.get_num_threads() == 1
    train(config, new_storage(tmp_path / "again"))  # training gets torch's full count back
    assert torch.get_num_threads() == 2


def test_untrained_model_loads_for_serving(tmp_path, monkeypatch):
    """Trained without NLU examples: nothing persisted, and its encoder is never needed."""
    monkeypatch.chdir(tmp_path)
    config = make_config("./encoders/not-here", num_threads=3)
    clf = load(config, new_storage(tmp_path / "empty"))
    assert not clf.model.is_trained and torch.get_num_threads() == 3


# --- 4. unknown config keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("epoch", "epochs"),
        ("ranking_lenght", "ranking_length"),
        ("num_thread", "num_threads"),
        ("tempreature", "temperature"),
        ("explain_topk", "explain_top_k"),
    ],
)
def test_unknown_key_names_the_closest_valid_one(tiny_encoder_dir, tmp_path, key, suggestion):
    config = make_config(tiny_encoder_dir, **{key: 3})
    with pytest.raises(InvalidConfigException) as info:
        MetaIntentClassifier.create(config, new_storage(tmp_path), Resource("x"), context())
    assert str(info.value) == (
        f"rasa_meta.MetaIntentClassifier: unknown option '{key}'; did you mean '{suggestion}'?"
    )


def test_unknown_key_without_a_close_match_lists_the_options(tiny_encoder_dir):
    with pytest.raises(InvalidConfigException, match="'treshold'.*options are.*oos_quantile"):
        MetaIntentClassifier.validate_config(make_config(tiny_encoder_dir, treshold=0.4))


def test_check_keys_lives_with_the_config_dataclass():
    FewShotConfig.check_keys({"epochs": 1, "encoder": "default"})
    FewShotConfig.check_keys({"extra": 1}, extra_allowed=["extra"])
    FewShotConfig.check_keys({"internal": 1}, ignored=["internal"])
    with pytest.raises(ValueError, match="did you mean 'extra'"):
        FewShotConfig.check_keys({"extr": 1}, extra_allowed=["extra"])
    with pytest.raises(ValueError, match="unknown option 'internl'; the options are"):
        FewShotConfig.check_keys({"internl": 1}, ignored=["internal"])  # never suggested


@pytest.mark.parametrize("finetuning", [False, True])
def test_config_as_rasa_builds_it_passes(tiny_encoder_dir, finetuning):
    """The keys Rasa's default recipe puts into the component's config are accepted, in the
    train and the predict graph, with and without `rasa train --finetune`."""
    rasa_config = {
        "recipe": "default.v1",
        "language": "en",
        "pipeline": [
            {"name": "rasa_meta.MetaIntentClassifier", "encoder": str(tiny_encoder_dir),
             "epochs": 2, "num_threads": 2},
        ],
        "policies": [],
    }
    cli = {"finetuning_epoch_fraction": 0.5} if finetuning else {}
    graphs = DefaultV1Recipe().graph_config_for_recipe(
        rasa_config, cli, training_type=TrainingType.NLU, is_finetuning=finetuning
    )
    nodes = [
        node
        for schema in (graphs.train_schema, graphs.predict_schema)
        for node in schema.nodes.values()
        if node.uses is MetaIntentClassifier
    ]
    assert len(nodes) == 2
    seen = set()
    for node in nodes:
        seen |= set(node.config)
        full = override_defaults(MetaIntentClassifier.get_default_config(), node.config)
        MetaIntentClassifier.validate_config(full)
    assert ("finetuning_epoch_fraction" in seen) is finetuning
    # and a pipeline entry passed on with its `name`
    MetaIntentClassifier.validate_config(
        make_config(tiny_encoder_dir, name="rasa_meta.MetaIntentClassifier")
    )

"""Helpers shared by the tests that drive MetaIntentClassifier through Rasa's graph API."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from rasa_meta.component import MetaIntentClassifier
from tests.conftest import toy_corpus


def new_storage(path: Path) -> LocalModelStorage:
    path.mkdir(parents=True, exist_ok=True)
    return LocalModelStorage(path)


def context(finetuning: bool = False) -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test-model", is_finetuning=finetuning)


def load(config, storage, name="clf") -> MetaIntentClassifier:
    return MetaIntentClassifier.load(config, storage, Resource(name), context())


def parse(clf: MetaIntentClassifier, texts: List[str]) -> List[Message]:
    return clf.process([Message(data={"text": t}) for t in texts])


def make_config(encoder: Any, **overrides: Any) -> Dict[str, Any]:
    """The component's default config with ``encoder`` and any other keys set."""
    return {**MetaIntentClassifier.get_default_config(), "encoder": str(encoder), **overrides}


def training_data(pairs: Optional[Sequence[Tuple[str, str]]] = None) -> TrainingData:
    """(text, intent) pairs as Rasa training data; the toy corpus by default."""
    if pairs is None:
        pairs = list(zip(*toy_corpus()))
    return TrainingData([Message(data={"text": t, "intent": i}) for t, i in pairs])


def train(config: Dict[str, Any], storage: LocalModelStorage, data: Optional[TrainingData] = None,
          name: str = "clf") -> MetaIntentClassifier:
    """Create and train a classifier as Rasa does (the toy corpus by default); it persists."""
    clf = MetaIntentClassifier.create(config, storage, Resource(name), context())
    assert clf.train(data if data is not None else training_data()) == Resource(name)
    return clf


def train_with_own_encoder(
    tiny_encoder_dir: Path, tmp_path: Path, **overrides: Any
) -> Tuple[Path, Dict[str, Any], LocalModelStorage, MetaIntentClassifier]:
    """Copy the tiny encoder to ``tmp_path/my-encoder`` and train on the toy corpus with it, for
    tests that then change or remove the encoder: (encoder, config, storage, classifier)."""
    encoder = tmp_path / "my-encoder"
    shutil.copytree(tiny_encoder_dir, encoder)
    config = make_config(encoder, **overrides)
    storage = new_storage(tmp_path / "s")
    return encoder, config, storage, train(config, storage)

"""Helpers shared by the tests that drive MetaIntentClassifier through Rasa's graph API."""

from __future__ import annotations

from pathlib import Path
from typing import List

from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.nlu.training_data.message import Message

from rasa_meta.component import MetaIntentClassifier


def new_storage(path: Path) -> LocalModelStorage:
    path.mkdir(parents=True, exist_ok=True)
    return LocalModelStorage(path)


def context(finetuning: bool = False) -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test-model", is_finetuning=finetuning)


def load(config, storage, name="clf") -> MetaIntentClassifier:
    return MetaIntentClassifier.load(config, storage, Resource(name), context())


def parse(clf: MetaIntentClassifier, texts: List[str]) -> List[Message]:
    return clf.process([Message(data={"text": t}) for t in texts])

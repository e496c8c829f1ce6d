"""Rasa 3.6 graph component ``rasa_meta.MetaResponseSelector``: answers retrieval intents
(``faq``, ``chitchat``) with the response key MetaIntentClassifier scored.

MetaIntentClassifier learns each response key (``faq/ask_hours``) as its own label, from the
same few examples, encoder and in-scope score as every other intent, and leaves the keys'
scores on the message. This component turns them into exactly what Rasa's
``ResponseSelector`` writes (``response_selector`` with ``all_retrieval_intents`` and one entry
per selector: response, confidence, ``intent_response_key``, ``utter_action``, ranking), so
rules with ``utter_faq``, ``rasa shell`` and ``rasa test nlu`` work unchanged. It loads no
encoder and embeds nothing: a message is embedded once, by the classifier.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.constants import (
    RESPONSE_SELECTOR_DEFAULT_INTENT,
    RESPONSE_SELECTOR_PREDICTION_KEY,
    RESPONSE_SELECTOR_PROPERTY_NAME,
    RESPONSE_SELECTOR_RANKING_KEY,
    RESPONSE_SELECTOR_RESPONSES_KEY,
    RESPONSE_SELECTOR_RETRIEVAL_INTENTS,
    RESPONSE_SELECTOR_UTTER_ACTION_KEY,
)
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.constants import INTENT_RESPONSE_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data import util
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from rasa_meta.component import RESPONSE_KEYS_PROPERTY, graph_component_names
from rasa_meta.runtime.retrieval import intent_of

logger = logging.getLogger(__name__)

NAME = "rasa_meta.MetaResponseSelector"
DEFAULTS: Dict[str, Any] = {
    # Which retrieval intent this selector answers; None: every retrieval intent (one
    # selector for all, under the key "default", as Rasa's ResponseSelector does).
    "retrieval_intent": None,
    # Response keys in the ranking; 0 lists all.
    "ranking_length": 10,
}
STATE_FILE = "meta_response_selector.json"



@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True
)
class MetaResponseSelector(GraphComponent, IntentClassifier):
    """Response selection for retrieval intents from MetaIntentClassifier's response keys."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        return dict(DEFAULTS)

    @staticmethod
    def required_components() -> List[type]:
        # Not declared to Rasa: its check looks for required components among a train node's
        # inputs, and classifiers are not inputs of one another there. create() checks it.
        return []

    def __init__(
        self,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        responses: Optional[Dict[str, List[Dict[str, Any]]]] = None,
        all_retrieval_intents: Optional[List[str]] = None,
    ) -> None:
        self.component_config = config
        self._model_storage = model_storage
        self._resource = resource
        self.retrieval_intent: Optional[str] = config.get("retrieval_intent")
        self.responses = responses or {}
        self.all_retrieval_intents = list(all_retrieval_intents or [])

    @classmethod
    def validate_config(cls, config: Dict[str, Any]) -> None:
        unknown = sorted(set(config) - set(DEFAULTS) - {"name"})
        if unknown:
            raise InvalidConfigException(
                f"{NAME}: unknown option(s) {unknown}; the options are {sorted(DEFAULTS)}."
            )
        value = config.get("ranking_length", 10)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidConfigException(
                f"{NAME}: 'ranking_length' must be a whole number >= 0, got {value!r}."
            )
        retrieval = config.get("retrieval_intent")
        if retrieval is not None and (not isinstance(retrieval, str) or "/" in retrieval):
            raise InvalidConfigException(
                f"{NAME}: 'retrieval_intent' must be a retrieval intent's name such as 'faq' "
                f"(not a response key like 'faq/ask_hours'), got {retrieval!r}."
            )

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> MetaResponseSelector:
        cls.validate_config(config)
        names = graph_component_names(execution_context)
        if names is not None and "MetaIntentClassifier" not in names:
            raise InvalidConfigException(
                f"{NAME} answers from the response keys MetaIntentClassifier scores: add "
                f"`- name: rasa_meta.MetaIntentClassifier` before it in the pipeline."
            )
        return cls(config, model_storage, resource)

    # --- training --------------------------------------------------------------------------

    def train(self, training_data: TrainingData) -> Resource:
        """Keep the retrieval intents and their responses (from the domain); the response
        keys themselves are learnt by MetaIntentClassifier."""
        self.all_retrieval_intents = sorted(training_data.retrieval_intents)
        keys = {m.get(INTENT_RESPONSE_KEY) for m in training_data.intent_examples
                if m.get(INTENT_RESPONSE_KEY) and self._answers(m.get(INTENT_RESPONSE_KEY))}
        self.responses = {name: list(resp) for name, resp in training_data.responses.items()
                          if util.template_key_to_intent_response_key(name) in keys}
        if not keys:
            which = f"'{self.retrieval_intent}'" if self.retrieval_intent else "any"
            logger.warning(
                f"{NAME}: no examples of {which} retrieval intent (intents named like "
                f"faq/ask_hours in the NLU data); it will select no response."
            )
        missing = sorted(k for k in keys
                         if util.intent_response_key_to_template_key(k) not in self.responses)
        if missing:
            logger.warning(
                f"{NAME}: no response in the domain for {missing}: add "
                f"`{util.intent_response_key_to_template_key(missing[0])}` under `responses:`."
            )
        self.persist()
        return self._resource

    def _answers(self, key: str) -> bool:
        return self.retrieval_intent is None or intent_of(key) == self.retrieval_intent

    def persist(self) -> None:
        with self._model_storage.write_to(self._resource) as directory:
            state = {"responses": self.responses,
                     "all_retrieval_intents": self.all_retrieval_intents}
            (directory / STATE_FILE).write_text(json.dumps(state, ensure_ascii=False),
                                                encoding="utf-8")

    @classmethod
    def load(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> MetaResponseSelector:
        cls.validate_config(config)
        try:
            with model_storage.read_from(resource) as directory:
                state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        except (ValueError, FileNotFoundError):  # never trained (no NLU data)
            return cls(config, model_storage, resource)
        return cls(config, model_storage, resource, state["responses"],
                   state["all_retrieval_intents"])

    # --- inference -------------------------------------------------------------------------

    def process(self, messages: List[Message]) -> List[Message]:
        """Set ``response_selector`` as Rasa's ResponseSelector does."""
        limit = int(self.component_config.get("ranking_length", 10))
        selector_key = self.retrieval_intent or RESPONSE_SELECTOR_DEFAULT_INTENT
        for message in messages:
            keys = [(k, s) for k, s in message.get(RESPONSE_KEYS_PROPERTY) or []
                    if self._answers(k)]
            total = sum(s for _, s in keys)
            # the keys' probabilities given that the message is one of these retrieval intents
            ranking = [{PREDICTED_CONFIDENCE_KEY: float(s / total) if total > 0 else 0.0,
                        INTENT_RESPONSE_KEY: k} for k, s in keys]
            top = ranking[0] if ranking else {PREDICTED_CONFIDENCE_KEY: 0.0,
                                              INTENT_RESPONSE_KEY: None}
            key = top[INTENT_RESPONSE_KEY]
            utter = util.intent_response_key_to_template_key(key) if key else None
            responses = self.responses.get(utter) if utter else None
            if key and not responses:
                responses = [{TEXT: key}]  # as ResponseSelector does without a response
            prediction = {
                RESPONSE_SELECTOR_PREDICTION_KEY: {
                    RESPONSE_SELECTOR_RESPONSES_KEY: responses,
                    PREDICTED_CONFIDENCE_KEY: top[PREDICTED_CONFIDENCE_KEY],
                    INTENT_RESPONSE_KEY: key,
                    RESPONSE_SELECTOR_UTTER_ACTION_KEY: utter,
                },
                RESPONSE_SELECTOR_RANKING_KEY: ranking[:limit] if limit > 0 else ranking,
            }
            properties = message.get(RESPONSE_SELECTOR_PROPERTY_NAME, {})
            properties[RESPONSE_SELECTOR_RETRIEVAL_INTENTS] = self.all_retrieval_intents
            properties[selector_key] = prediction
            message.set(RESPONSE_SELECTOR_PROPERTY_NAME, properties, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

"""Rasa 3.6 graph component: thin glue over :class:`rasa_meta.runtime.model.FewShotIntentModel`."""

from __future__ import annotations

import logging
import threading
from dataclasses import fields
from typing import Any, Dict, List, Optional, Tuple

import torch
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.constants import (
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RESPONSE_KEY,
    METADATA,
    METADATA_INTENT,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from rasa_meta import __version__
from rasa_meta.runtime.config import FewShotConfig, parse_config
from rasa_meta.runtime.encoder import (
    EncoderNotFoundError,
    encoder_fingerprint,
    is_english_only,
    resolve_encoder,
)
from rasa_meta.runtime.errors import InScopeConfigError, InvalidOptionError
from rasa_meta.runtime.model import FewShotIntentModel
from rasa_meta.runtime.retrieval import intent_scores, response_key_scores

logger = logging.getLogger(__name__)

INTENT_RANKING_KEY = "intent_ranking"
EXPLANATION_KEY = "intent_explanation"
NAME = "rasa_meta.MetaIntentClassifier"
# Message property (not in the parse output) with the response keys' scores, best first, for
# MetaResponseSelector: the classifier's embedding and head answer both, so nothing is
# encoded twice.
RESPONSE_KEYS_PROPERTY = "rasa_meta_response_keys"
# Options of the component itself, beyond FewShotConfig's, with their defaults.
COMPONENT_DEFAULTS: Dict[str, Any] = {"ranking_length": 10, "explain": False, "explain_top_k": 3}
# Keys Rasa itself puts into a component's config: the default recipe adds
# `finetuning_epoch_fraction` next to `epochs` for `rasa train --finetune`; `name` is the
# pipeline entry's key (the recipe removes it, a hand-built config may keep it).
RASA_ADDED_KEYS = ("name", "finetuning_epoch_fraction")
# Intra-op threads per process for `num_threads: auto` when serving: Rasa's server runs
# requests concurrently, and parallelism within each request would oversubscribe the CPU.
AUTO_SERVING_THREADS = 1

# torch's thread count before a model was loaded for serving; training restores it.
_threads_before_serving: Optional[int] = None


def serving_threads(setting: Any) -> int:
    """Intra-op threads for a `num_threads` setting: `auto` gives 1, a number itself."""
    return AUTO_SERVING_THREADS if setting == "auto" else int(setting)


def _use_serving_threads(setting: Any) -> None:
    global _threads_before_serving
    threads = serving_threads(setting)
    if _threads_before_serving is None:
        _threads_before_serving = torch.get_num_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    logger.debug(f"{NAME}: {threads} intra-op CPU thread(s) for inference.")


def _restore_training_threads() -> None:
    global _threads_before_serving
    if _threads_before_serving is not None:
        torch.set_num_threads(_threads_before_serving)
        _threads_before_serving = None


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True
)
class MetaIntentClassifier(GraphComponent, IntentClassifier):
    """Few-shot intent classifier over a meta-trained sentence encoder."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        defaults = {f.name: f.default for f in fields(FewShotConfig)}
        defaults.update(COMPONENT_DEFAULTS)
        return defaults

    @staticmethod
    def required_components() -> List[type]:
        return []

    @staticmethod
    def required_packages() -> List[str]:
        return ["torch", "transformers", "sentence_transformers"]

    def __init__(
        self,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        model: Optional[FewShotIntentModel] = None,
        check_encoder: bool = True,
    ) -> None:
        self.component_config = config
        self._model_storage = model_storage
        self._resource = resource
        # A loaded model has found its encoder already (see FewShotIntentModel.load), possibly
        # at the path recorded at training time rather than `encoder` from this directory.
        self.validate_config(config, check_encoder=check_encoder and model is None)
        self.model = model or FewShotIntentModel(FewShotConfig.from_dict(config))
        # torch modules are not guaranteed re-entrant; Rasa's server may call process()
        # from several threads, so inference is serialised per component.
        self._lock = threading.Lock()
        self._has_response_selector = True  # set from the graph by create()

    # --- configuration -------------------------------------------------------------------

    @staticmethod
    def validate_config(config: Dict[str, Any], check_encoder: bool = True) -> None:
        """Raise InvalidConfigException naming the key and the fix.

        ``check_encoder``: also check that ``encoder`` resolves from the current directory.
        """
        try:
            parse_config(config, COMPONENT_DEFAULTS, RASA_ADDED_KEYS, check_encoder)
        except InvalidOptionError as e:
            raise InvalidConfigException(f"{NAME}: {e}") from e
        for key in ("ranking_length", "explain_top_k"):
            value = config.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidConfigException(
                    f"{NAME}: '{key}' must be a whole number >= 0, got {value!r}."
                )

    @classmethod
    def fingerprint_addon(cls, config: Dict[str, Any]) -> Optional[str]:
        """Retrain when the plugin version or the encoder's weights change."""
        try:
            identity = encoder_fingerprint(config.get("encoder"))
        except EncoderNotFoundError:
            identity = str(config.get("encoder"))
        return f"rasa-meta=={__version__}|{identity}|in-scope:{_scorer_digest(config)}"

    # --- graph component life cycle ---------------------------------------------------------

    @classmethod
    def create(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> MetaIntentClassifier:
        warn_if_language_unsupported(bot_language(execution_context), config.get("encoder"))
        clf = cls(config, model_storage, resource)
        clf._has_response_selector = has_response_selector(execution_context)
        return clf

    def train(self, training_data: TrainingData) -> Resource:
        examples = [
            m for m in training_data.intent_examples if (m.get(TEXT) or "").strip()
        ]
        if not examples:
            logger.warning(
                "rasa_meta.MetaIntentClassifier: no intent examples with text in the training "
                "data; skipping training. Add examples under 'nlu:' to get intent predictions."
            )
            return self._resource
        texts = [m.get(TEXT) for m in examples]
        # retrieval intents are learnt per response key (faq/ask_hours), reported per intent
        labels = [m.get(INTENT_RESPONSE_KEY) or m.get(INTENT) for m in examples]
        descriptions = intent_descriptions(examples, labels)
        self._warn_if_no_selector(training_data)
        texts, labels = self._without_unreadable(texts, labels)
        if not texts:
            return self._resource
        if self.model.is_trained:  # `rasa train --finetune`: adapt the loaded model further
            self.model.config.epochs = int(self.component_config.get("epochs", 0))
        _restore_training_threads()  # training uses all of torch's threads
        from rasa_meta.training.adapt import adapt  # training code: train time only

        try:
            adapt(self.model, texts, labels, descriptions)
        except InScopeConfigError as e:
            raise InvalidConfigException(f"rasa_meta.MetaIntentClassifier: {e}") from e
        from rasa_meta.tooling.overlap import training_warnings  # train time only, not serving

        for line in training_warnings(self.model):  # from the fitted embeddings, no re-encoding
            logger.warning(f"rasa_meta.MetaIntentClassifier: {line}")
        self.persist()
        return self._resource

    def _without_unreadable(
        self, texts: List[str], labels: List[str]
    ) -> Tuple[List[str], List[str]]:
        """The examples the encoder can read; a warning names the others (emoji, scripts
        outside its vocabulary), which would all embed alike and pull their intent towards
        every such message."""
        unreadable = self.model.encoder.unreadable(texts)
        if not any(unreadable):
            return texts, labels
        dropped: Dict[str, List[str]] = {}
        for text, label, bad in zip(texts, labels, unreadable):
            if bad:
                dropped.setdefault(label, []).append(text)
        kept = [(t, lab) for t, lab, bad in zip(texts, labels, unreadable) if not bad]
        lost = sorted(set(dropped) - {lab for _, lab in kept})
        shown = "; ".join(f"{lab}: {', '.join(repr(t) for t in ts[:3])}"
                          for lab, ts in sorted(dropped.items()))
        logger.warning(
            f"{NAME}: {sum(map(len, dropped.values()))} example(s) are made only of characters "
            f"the encoder '{self.model.config.encoder}' does not know (emoji, another script), "
            f"so they are left out of training and messages like them get confidence 0 "
            f"(FallbackClassifier answers them): {shown}."
            + (f" Intents left without examples, never predicted: {', '.join(lost)}." if lost
               else "")
            + " Write such examples in words, or use an encoder whose vocabulary has them."
        )
        if not kept:
            logger.warning(f"{NAME}: no readable intent examples left; skipping training.")
        return [t for t, _ in kept], [lab for _, lab in kept]

    def _warn_if_no_selector(self, training_data: TrainingData) -> None:
        retrieval = sorted(training_data.retrieval_intents)
        if retrieval and not self._has_response_selector:
            logger.warning(
                f"{NAME}: the retrieval intents {retrieval} are predicted, but no response "
                f"selector follows in the pipeline, so actions like utter_{retrieval[0]} find "
                f"no response. Add `- name: rasa_meta.MetaResponseSelector` after {NAME} "
                f"(README: 'FAQs and chitchat')."
            )

    def persist(self) -> None:
        if not self.model.is_trained:
            return
        with self._model_storage.write_to(self._resource) as directory:
            self.model.save(directory)

    @classmethod
    def load(
        cls,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> MetaIntentClassifier:
        """Load for inference, or for `rasa train --finetune` (``is_finetuning``).

        For inference, torch's intra-op threads are set from ``num_threads``."""
        cls.validate_config(config, check_encoder=False)
        try:
            with model_storage.read_from(resource) as directory:
                model = FewShotIntentModel.load(directory, FewShotConfig.from_dict(config))
        except ValueError:  # from read_from: the resource was never persisted (a corrupt model
            # raises ModelLoadError, which is no ValueError, so it reaches the user)
            logger.debug(
                f"{NAME}: no trained model in the archive (trained without NLU examples?); "
                f"it will predict no intent."
            )
            model = None
        if not execution_context.is_finetuning:
            _use_serving_threads(config.get("num_threads", "auto"))
            if model is None:  # never trains, so never needs its encoder
                return cls(config, model_storage, resource, check_encoder=False)
        return cls(config, model_storage, resource, model)

    # --- inference -----------------------------------------------------------------------------

    def process(self, messages: List[Message]) -> List[Message]:
        """Set `intent` and `intent_ranking` on each message (one batch per call)."""
        texts = [m.get(TEXT) if isinstance(m.get(TEXT), str) else "" for m in messages]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        skipped = set(range(len(messages))) - set(todo)
        for i, message in enumerate(messages):
            if i in skipped or not self.model.is_trained:
                self._set_empty(message)
        if not todo or not self.model.is_trained:
            return messages
        with self._lock, torch.inference_mode():
            batch = [texts[i] for i in todo]
            emb = self.model.embed(batch)
            probs, in_scope, _ = self.model.predict_embeddings(emb)
            probs, in_scope = self.model.withhold_unreadable(batch, probs, in_scope)
        labels = self.model.labels
        limit = int(self.component_config.get("ranking_length", 10))
        explain = bool(self.component_config.get("explain", False))
        for row, i in enumerate(todo):
            scores = probs[row].tolist()
            per_intent = intent_scores(labels, scores)
            if limit > 0:
                per_intent = per_intent[:limit]
            ranking = [{INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: float(score)}
                       for name, score in per_intent]
            messages[i].set(INTENT, dict(ranking[0]), add_to_output=True)
            messages[i].set(INTENT_RANKING_KEY, ranking, add_to_output=True)
            keys = response_key_scores(labels, scores)
            if keys:  # what MetaResponseSelector answers from, not part of the parse output
                messages[i].set(RESPONSE_KEYS_PROPERTY, keys)
            if explain:
                best = sorted(range(len(labels)), key=lambda j: -scores[j])  # keys, not intents
                explained = [{INTENT_NAME_KEY: labels[j]} for j in best]
                messages[i].set(
                    EXPLANATION_KEY, self._explain(emb[row], explained, float(in_scope[row])),
                    add_to_output=True,
                )
        return messages

    def _explain(self, emb: torch.Tensor, ranking: List[Dict], in_scope: float) -> Dict:
        k = int(self.component_config.get("explain_top_k", 3))
        return {
            "in_scope_probability": in_scope,
            "intents": [
                {
                    "intent": item[INTENT_NAME_KEY],
                    "nearest_examples": [
                        {"text": text, "similarity": sim}
                        for text, sim in self.model.nearest_examples(emb, item[INTENT_NAME_KEY], k)
                    ],
                }
                for item in ranking[:k]
            ],
        }

    @staticmethod
    def _set_empty(message: Message) -> None:
        message.set(
            INTENT, {INTENT_NAME_KEY: None, PREDICTED_CONFIDENCE_KEY: 0.0}, add_to_output=True
        )
        message.set(INTENT_RANKING_KEY, [], add_to_output=True)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data


def intent_descriptions(examples: List[Message], labels: List[str]) -> Dict[str, str]:
    """Each intent's description from the NLU data (``metadata: {description: ...}`` on the
    intent, which Rasa puts on every one of its examples), by the label it is learnt as."""
    found: Dict[str, str] = {}
    for message, label in zip(examples, labels):
        metadata = message.get(METADATA)
        intent_metadata = metadata.get(METADATA_INTENT) if isinstance(metadata, dict) else None
        if isinstance(intent_metadata, dict):
            text = intent_metadata.get("description")
            if isinstance(text, str) and text.strip():
                found.setdefault(label, text.strip())
    return found


def bot_language(execution_context: ExecutionContext) -> Optional[str]:
    """The ``language`` of the bot's config.yml, which Rasa hands only to the node that reads
    the NLU data; ``None`` where the graph has no such node (the predict graph)."""
    schema = getattr(execution_context, "graph_schema", None)
    node = schema.nodes.get("nlu_training_data_provider") if schema is not None else None
    language = node.config.get("language") if node is not None else None
    return str(language) if language else None


def graph_component_names(execution_context: ExecutionContext) -> Optional[List[str]]:
    """Class names of the graph's components; ``None`` where there is no graph to read (a
    component created on its own)."""
    schema = getattr(execution_context, "graph_schema", None)
    if schema is None or not schema.nodes:
        return None
    return [getattr(node.uses, "__name__", "") for node in schema.nodes.values()]


def has_response_selector(execution_context: ExecutionContext) -> bool:
    """Whether the graph has a response selector (rasa-meta's or Rasa's) to answer retrieval
    intents; ``True`` where the graph cannot tell."""
    names = graph_component_names(execution_context)
    return names is None or bool({"MetaResponseSelector", "ResponseSelector"} & set(names))


_warned_languages: set = set()


def warn_if_language_unsupported(language: Optional[str], encoder: Optional[str]) -> None:
    """Warn once per process when a non-English bot is trained with an English-only encoder:
    words outside its vocabulary become unknown tokens, and intents get guessed from the rest."""
    if not language or language.lower().split("-")[0].split("_")[0] == "en":
        return
    if not is_english_only(encoder) or (language, str(encoder)) in _warned_languages:
        return
    _warned_languages.add((language, str(encoder)))
    from rasa.shared.utils.io import raise_warning

    raise_warning(
        f"{NAME}: the bot's language is '{language}', but the encoder "
        f"'{encoder or 'default'}' is English-only (all-MiniLM-L6-v2): words it does not know "
        f"become unknown tokens and intents are guessed from what is left. Set `encoder:` to a "
        f"multilingual sentence-transformers model, e.g. "
        f"sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2 (downloaded from the "
        f"Hugging Face hub at `rasa train`), or meta-train one with `rasa-meta meta-train "
        f"--base-model <that model>` (README: 'Other languages')."
    )


def _scorer_digest(config: Dict[str, Any]) -> str:
    """Hash of the in-scope scorer shipped with the configured encoder ("none" if it has none):
    a retrained scorer changes what `rasa train` stores, so it must trigger retraining."""
    import hashlib
    from pathlib import Path

    from rasa_meta.runtime.in_scope import SCORER_FILE

    try:
        path = Path(resolve_encoder(config.get("encoder"))) / SCORER_FILE
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "none"
    except (EncoderNotFoundError, OSError):
        return "none"

"""A trained Rasa model's MetaIntentClassifier and FallbackClassifier, loaded as ``rasa run``
loads them, for the tools that read a bot's traffic with it (``inbox``, ``calibrate``)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from rasa_meta.tooling.inbox_traffic import InboxError

FALLBACK_INTENT = "nlu_fallback"

@dataclass
class ParsedTexts:
    """The bot's reading of each distinct text."""

    intent: List[Optional[str]]  # what the bot acts on: nlu_fallback where it fell back
    top_intent: List[Optional[str]]  # the classifier's own best intent
    confidence: np.ndarray  # and its confidence
    fell_back: np.ndarray  # bool
    embeddings: np.ndarray  # the classifier's encoder, unit length


@dataclass
class BotModel:
    """The parts of a trained Rasa model the inbox uses, loaded the way ``rasa run`` does."""

    path: str
    classifier: Any  # rasa_meta.component.MetaIntentClassifier
    fallback: Any = None  # rasa.nlu.classifiers.fallback_classifier.FallbackClassifier
    fallback_config: Dict[str, float] = field(default_factory=dict)

    @property
    def threshold(self) -> Optional[float]:
        value = self.fallback_config.get("threshold")
        return float(value) if value is not None else None

    def parse(self, texts: Sequence[str], batch_size: int = 256,
              progress: bool = True) -> ParsedTexts:
        """Intent, confidence, fallback decision and embedding of each text.

        Each batch (length-sorted: little padding) is embedded once; the classifier's model
        predicts from those embeddings as the classifier's ``process`` does (confidences,
        unreadable texts withheld, intents ranked as in the parse result), and the
        FallbackClassifier decides on that ranking, exactly as in the bot. The model is only
        called, never patched: another thread may use the same classifier meanwhile.
        """
        import torch
        from rasa.shared.nlu.constants import (
            INTENT,
            INTENT_NAME_KEY,
            INTENT_RANKING_KEY,
            PREDICTED_CONFIDENCE_KEY,
            TEXT,
        )
        from rasa.shared.nlu.training_data.message import Message
        from tqdm.auto import tqdm

        model = self.classifier.model
        n = len(texts)
        dim = model.encoder.dim
        emb = np.zeros((n, dim), dtype=np.float32)
        intent: List[Optional[str]] = [None] * n
        top_intent: List[Optional[str]] = [None] * n
        confidence = np.zeros(n)
        fell_back = np.zeros(n, dtype=bool)
        order = sorted(range(n), key=lambda i: len(texts[i]))
        limit = int(self.classifier.component_config.get("ranking_length", 10))
        bar = tqdm(total=n, desc="parsing messages", unit="msg", disable=not progress,
                   leave=False)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            batch = [texts[i] for i in idx]
            with torch.inference_mode():
                vectors = model.embed(batch)
                probs, in_scope, _ = model.predict_embeddings(vectors)
                probs, _ = model.withhold_unreadable(batch, probs, in_scope)
            emb[idx] = vectors.float().numpy()
            messages = [Message(data={TEXT: t}) for t in batch]
            for row, message in enumerate(messages):
                ranking = (intent_ranking(model.labels, probs[row].tolist(), limit)
                           if batch[row].strip() else [])  # process() skips blank texts
                message.set(INTENT, dict(ranking[0]) if ranking else
                            {INTENT_NAME_KEY: None, PREDICTED_CONFIDENCE_KEY: 0.0},
                            add_to_output=True)
                message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
            for row, i in enumerate(idx):
                own = messages[row].get(INTENT) or {}
                top_intent[i] = own.get(INTENT_NAME_KEY)
                confidence[i] = float(own.get(PREDICTED_CONFIDENCE_KEY) or 0.0)
            if self.fallback is not None:
                self.fallback.process(messages)
            for row, i in enumerate(idx):
                final = messages[row].get(INTENT) or {}
                intent[i] = final.get(INTENT_NAME_KEY)
                fell_back[i] = intent[i] == FALLBACK_INTENT
            bar.update(len(idx))
        bar.close()
        return ParsedTexts(intent, top_intent, confidence, fell_back, emb)


def intent_ranking(labels: Sequence[str], scores: Sequence[float],
                   limit: int) -> List[Dict[str, Any]]:
    """The ``intent_ranking`` MetaIntentClassifier puts on a message for these confidences:
    response keys summed into their retrieval intent, best first, the top ``limit`` (all if
    ``limit`` is 0 or less)."""
    from rasa.shared.nlu.constants import INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY

    from rasa_meta.runtime.retrieval import intent_scores

    ranked = intent_scores(labels, scores)
    if limit > 0:
        ranked = ranked[:limit]
    return [{INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: float(score)}
            for name, score in ranked]


def find_model(model: Optional[str]) -> Path:
    """The model archive: the file given, or the newest .tar.gz in a folder (./models)."""
    from rasa.model import get_latest_model

    spec = Path(model) if model else Path("models")
    if spec.is_file():
        return spec
    if spec.is_dir():
        latest = get_latest_model(str(spec))
        if latest:
            return Path(latest)
        raise InboxError(f"no trained model (*.tar.gz) in '{spec}': run `rasa train` or pass "
                         f"--model path/to/model.tar.gz.")
    raise InboxError(f"no model at '{spec}': pass --model path/to/model.tar.gz (from "
                     f"`rasa train`).")


def load_bot_model(model: Optional[str], num_threads: Optional[int] = None) -> BotModel:
    """Load the MetaIntentClassifier and FallbackClassifier of a Rasa model archive with
    their trained state and config, as ``rasa run`` does; the rest of the graph (policies,
    TensorFlow models) is not loaded.

    ``num_threads``: torch threads for parsing (default: all that torch would use; serving
    itself runs one per process).
    """
    import torch
    from rasa.engine.graph import ExecutionContext
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.nlu.classifiers.fallback_classifier import FallbackClassifier

    from rasa_meta.component import MetaIntentClassifier
    from rasa_meta.runtime.model import ModelLoadError

    path = find_model(model)
    threads = num_threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="rasa-meta-inbox-") as tmp:
        try:
            storage, metadata = LocalModelStorage.from_model_archive(Path(tmp), path)
        except Exception as e:  # not a tar.gz, or not a Rasa 3 model
            raise InboxError(f"cannot read the Rasa model '{path}': {e}") from e
        schema = metadata.predict_schema
        nodes = list(schema.nodes.values())
        ours = [n for n in nodes if issubclass(n.uses, MetaIntentClassifier)]
        if not ours:
            raise InboxError(
                f"the model '{path}' has no rasa_meta.MetaIntentClassifier in its pipeline: "
                f"the inbox groups messages with that classifier's encoder."
            )
        node = ours[0]
        config = {**node.config, "num_threads": threads, "explain": False}
        context = ExecutionContext(schema, metadata.model_id)
        try:
            classifier = MetaIntentClassifier.load(config, storage, node.resource, context)
        except ModelLoadError as e:
            raise InboxError(f"cannot load the classifier of '{path}': {e}") from e
        if not classifier.model.is_trained:
            raise InboxError(f"the model '{path}' was trained without NLU examples: its "
                             f"classifier predicts nothing to compare traffic with.")
        fallback_nodes = [n for n in nodes if issubclass(n.uses, FallbackClassifier)]
        fallback, fallback_config = None, {}
        if fallback_nodes:
            fallback_config = {**FallbackClassifier.get_default_config(),
                               **fallback_nodes[0].config}
            fallback = FallbackClassifier(fallback_config)
    return BotModel(str(path), classifier, fallback, fallback_config)

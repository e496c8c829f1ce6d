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

        The classifier's own ``process`` and the FallbackClassifier's decide, exactly as in
        the bot; texts go in length-sorted batches (little padding), and the embeddings the
        classifier computes are kept rather than computed twice.
        """
        import torch
        from rasa.shared.nlu.constants import INTENT, TEXT
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
        captured: List[torch.Tensor] = []
        original_embed = model.embed

        def keep_embeddings(batch: Sequence[str]) -> torch.Tensor:
            out = original_embed(batch)
            captured.append(out)
            return out

        model.embed = keep_embeddings  # observe only: process() itself is unchanged
        try:
            bar = tqdm(total=n, desc="parsing messages", unit="msg", disable=not progress,
                       leave=False)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                messages = [Message(data={TEXT: texts[i]}) for i in idx]
                captured.clear()
                self.classifier.process(messages)
                if len(captured) == 1 and len(captured[0]) == len(idx):
                    vectors = captured[0]
                else:  # process() embedded differently (e.g. skipped texts): embed again
                    vectors = original_embed([texts[i] for i in idx])
                emb[idx] = vectors.float().numpy()
                for row, i in enumerate(idx):
                    own = messages[row].get(INTENT) or {}
                    top_intent[i] = own.get("name")
                    confidence[i] = float(own.get("confidence") or 0.0)
                if self.fallback is not None:
                    self.fallback.process(messages)
                for row, i in enumerate(idx):
                    final = messages[row].get(INTENT) or {}
                    intent[i] = final.get("name")
                    fell_back[i] = intent[i] == FALLBACK_INTENT
                bar.update(len(idx))
            bar.close()
        finally:
            del model.embed  # back to the class's method
        return ParsedTexts(intent, top_intent, confidence, fell_back, emb)


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

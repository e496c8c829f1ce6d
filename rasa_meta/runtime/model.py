"""The few-shot intent model, free of Rasa: encoder (body) + head + in-scope estimator.

``predict`` returns calibrated confidences; ``save``/``load`` write and read one directory
(:mod:`rasa_meta.runtime.persistence`); the options are :class:`FewShotConfig`
(:mod:`rasa_meta.runtime.config`). Adapting a model to a bot's examples is training code:
:func:`rasa_meta.training.adapt.adapt` runs the inner loop and then
:meth:`FewShotIntentModel.fit_embeddings`, so serving never imports it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from rasa_meta.runtime.config import (  # noqa: F401 (the model's options, importable from here)
    FALLBACK_TEMPERATURE,
    OBJECTIVES,
    OOS_CALIBRATIONS,
    FewShotConfig,
    encoder_temperature,
)
from rasa_meta.runtime.device import resolve_device
from rasa_meta.runtime.encoder import SentenceEncoder, resolve_encoder
from rasa_meta.runtime.errors import InScopeConfigError, ModelLoadError  # noqa: F401
from rasa_meta.runtime.heads import PrototypeHead, make_head
from rasa_meta.runtime.in_scope import (
    OOS_METHODS,
    HeldOutScores,
    InScopeEstimator,
    InScopeScorer,
)
from rasa_meta.runtime.label_text import label_texts
from rasa_meta.runtime.persistence import (  # noqa: F401 (file names, importable from here)
    HEAD_FILE,
    MODEL_DELTA_FILE,
    MODEL_FILE,
    load_model,
    save_model,
)

logger = logging.getLogger(__name__)


class FewShotIntentModel:
    """Encoder + head: adapts to labelled texts, predicts intent distributions."""

    def __init__(self, config: FewShotConfig, encoder: Optional[SentenceEncoder] = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self._encoder = encoder
        self.head: Optional[PrototypeHead] = None
        self.in_scope = InScopeEstimator()
        self.texts: List[str] = []
        self.descriptions: Dict[str, str] = {}  # intent -> description, as fitted
        self.delta: Dict[str, torch.Tensor] = {}
        # Where the encoder is loaded from: the absolute directory (or hub name) that
        # ``config.encoder`` resolved to. Set when the encoder is loaded, or by ``load`` to the
        # location recorded at training time when ``config.encoder`` is relative.
        self.encoder_path: Optional[str] = None
        # How examples score under an encoder adapted without them (set by ``fit``).
        self.held_out: Optional[HeldOutScores] = None

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            if self.encoder_path is None:
                self.encoder_path = resolve_encoder(self.config.encoder)
            self._encoder = SentenceEncoder.from_pretrained(
                self.encoder_path, self.config.max_length, self.config.encoder_prompt
            )
            self._encoder.to(self.device)
        return self._encoder

    @property
    def temperature(self) -> float:
        if self.config.temperature is not None:
            return float(self.config.temperature)
        return encoder_temperature(self.encoder.metadata)

    @property
    def labels(self) -> List[str]:
        return self.head.labels if self.head is not None else []

    @property
    def is_trained(self) -> bool:
        return self.head is not None and len(self.head.labels) > 0

    def _require_fitted(self, what: str) -> None:
        # a real error, not an assert: `python -O` strips asserts, and callers outside the
        # package reach these methods
        if self.head is None:
            raise RuntimeError(f"{what} needs a fitted model: call fit() or load() first.")

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(list(texts), batch_size=self.config.batch_size)

    def fit_embeddings(
        self,
        embeddings: torch.Tensor,
        labels: Sequence[str],
        texts: Sequence[str],
        descriptions: Optional[Dict[str, str]] = None,
    ) -> FewShotIntentModel:
        """Build the head and the out-of-scope calibrator from ready-made embeddings.

        ``descriptions`` (intent -> text, with the config's ``intent_descriptions``): with
        ``label_name_weight > 0`` each intent's description or name joins its prototype, and
        a described intent without examples is predicted from its description alone."""
        self.texts = list(texts)
        self.descriptions = {**(self.config.intent_descriptions or {}), **(descriptions or {})}
        weight = float(self.config.label_name_weight)
        named = self.label_embeddings(sorted(set(labels) | set(self.descriptions)))
        self.head = make_head(self.config.head, self.temperature).fit(
            embeddings, list(labels), named if weight > 0 else None, weight)
        self.head.refine(self.config.head_steps, self.config.head_learning_rate)
        self.in_scope = self.fit_in_scope(self.in_scope_method())
        return self

    def label_embeddings(self, labels: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Each label's name or description embedded (labels whose name has no words and
        that have no description are left out); nothing is encoded when names are off."""
        if float(self.config.label_name_weight) <= 0:
            return {}
        texts = label_texts(labels, self.descriptions)
        if not texts:
            return {}
        emb = self.embed(list(texts.values()))
        return {label: emb[i] for i, label in enumerate(texts)}

    def fit_in_scope(self, method: str) -> InScopeEstimator:
        """The in-scope estimator ``method`` gives with the fitted head (and the held-out
        calibration, when the inner loop measured one)."""
        self._require_fitted("fit_in_scope()")
        return InScopeEstimator.fit(
            self.head, method, self.config.oos_quantile, self._scorer(),
            self.held_out, float(self.config.out_of_scope_share),
            self.config.out_of_scope_intent,
        )

    def predict(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Confidences (n, intents), in-scope probability (n,), similarities (n, intents).

        Confidence = p(intent | in scope) * p(in scope): with ``similarity`` rows sum to the
        in-scope probability, which is 1 for messages as close to an intent as its typical
        example; with ``learned`` the top intent's confidence is it. A bot's out-of-scope
        intent (``out_of_scope_intent``) takes what the other intents leave, 1 minus their
        sum, so its rows sum to 1 (:mod:`rasa_meta.runtime.out_of_scope_intent`).
        """
        self._require_fitted("predict()")
        confidences, in_scope, sims = self.predict_embeddings(self.embed(texts))
        confidences, in_scope = self.withhold_unreadable(texts, confidences, in_scope)
        return confidences, in_scope, sims

    def withhold_unreadable(
        self, texts: Sequence[str], confidences: torch.Tensor, in_scope: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Confidence 0 for every intent of a text made only of tokens the encoder does not
        know (see :meth:`SentenceEncoder.unreadable`): all such texts embed alike, so the
        nearest intent would be a guess, often at high confidence. FallbackClassifier takes
        them."""
        mask = torch.tensor(self.encoder.unreadable(texts), dtype=torch.bool)
        if not bool(mask.any()):
            return confidences, in_scope
        mask = mask.to(confidences.device)
        return (torch.where(mask.unsqueeze(1), torch.zeros_like(confidences), confidences),
                torch.where(mask, torch.zeros_like(in_scope), in_scope))

    def predict_embeddings(
        self, emb: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._require_fitted("predict()")
        sims = self.head.similarities(emb)
        probs = self.head.predict_proba(emb)
        confidences, in_scope = self.in_scope.confidences(self.head, emb, probs, sims)
        return confidences, in_scope, sims

    def _scorer(self) -> Optional[InScopeScorer]:
        """The in-scope scorer meta-trained with this model's encoder, if it ships one."""
        location = self.encoder_path or resolve_encoder(self.config.encoder)
        path = Path(location)
        return InScopeScorer.load(path) if path.is_dir() else None

    def in_scope_method(self) -> str:
        """"learned", "similarity" or "off", from ``out_of_scope_detection``."""
        setting = self.config.out_of_scope_detection
        if setting not in (True, False, *OOS_METHODS):
            raise InScopeConfigError(
                f"out_of_scope_detection must be true, false or one of {list(OOS_METHODS)}, "
                f"got {setting!r}."
            )
        if setting is False:
            return "off"
        if setting is True:
            return "learned" if self._scorer() is not None else "similarity"
        if setting == "learned" and self._scorer() is None:
            raise InScopeConfigError(
                f"out_of_scope_detection 'learned' needs an in-scope scorer trained with the "
                f"encoder '{self.config.encoder}', which has none: train one with `rasa-meta "
                f"train-scorer --encoder {self.config.encoder}`, or set out_of_scope_detection "
                f"to 'similarity'."
            )
        return str(setting)

    def nearest_examples(self, emb: torch.Tensor, intent: str, k: int) -> List[Tuple[str, float]]:
        """The ``k`` training examples of ``intent`` closest to one embedding."""
        self._require_fitted("nearest_examples()")
        target = self.head.labels.index(intent)
        idx = (self.head.support_targets == target).nonzero().flatten()
        sims = self.head.support[idx] @ emb.float()
        top = sims.topk(min(k, len(idx)))
        return [(self.texts[int(idx[i])], float(s)) for s, i in zip(top.values, top.indices)]

    # --- persistence (runtime/persistence.py) ----------------------------------------------

    def save(self, directory: Union[str, Path]) -> None:
        """Write the fitted model to ``directory`` (see :func:`save_model`)."""
        save_model(self, directory)

    @classmethod
    def load(
        cls, directory: Union[str, Path], config: Optional[FewShotConfig] = None
    ) -> FewShotIntentModel:
        """Read a saved model fully into memory, encoder included, so that serving never
        loads anything per request; ``config`` may override the device, batch size and
        threads. Every failure is a ModelLoadError naming the file at fault (see
        :func:`load_model`)."""
        return load_model(cls, directory, config)

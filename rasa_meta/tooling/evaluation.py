"""Few-shot evaluation of an encoder on a labelled train/test pair (no Rasa).

The metrics (:mod:`rasa_meta.training.metrics`), the few-shot splits
(:func:`~rasa_meta.training.corpus.few_shot_task`) and the embedding cache
(:func:`~rasa_meta.training.embedding_cache.cached_encode`) are importable from here too.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from rasa_meta.runtime.encoder import SentenceEncoder
from rasa_meta.runtime.heads import make_head
from rasa_meta.runtime.model import FALLBACK_TEMPERATURE
from rasa_meta.training.adapt import adapt
from rasa_meta.training.corpus import IntentCorpus, few_shot_task, sample_shots  # noqa: F401
from rasa_meta.training.embedding_cache import cached_encode  # noqa: F401
from rasa_meta.training.metrics import (  # noqa: F401
    accuracy,
    auroc,
    expected_calibration_error,
    macro_f1,
    percentile,
)


def fit_logistic_regression(train_emb: torch.Tensor, train_labels: Sequence[str]):
    """A scikit-learn logistic regression over embeddings (the ``logreg`` baseline head)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000, C=10.0)
    clf.fit(train_emb.numpy(), list(train_labels))
    return clf


def logistic_regression_predict(
    train_emb: torch.Tensor, train_labels: Sequence[str], test_emb: torch.Tensor
) -> List[str]:
    clf = fit_logistic_regression(train_emb, train_labels)
    return list(clf.predict(test_emb.numpy()))


def evaluate_encoder(
    encoder: SentenceEncoder,
    train: IntentCorpus,
    test: IntentCorpus,
    heads: Sequence[str] = ("prototype",),
    test_embeddings: Optional[torch.Tensor] = None,
    temperature: float = FALLBACK_TEMPERATURE,
) -> Dict[str, Dict[str, float]]:
    """Accuracy and macro-F1 of each head on ``test``: prototype, refined (prototype +
    Proto-MAML head steps, the component's default), matching, logreg."""
    train_emb = encoder.encode(train.texts, batch_size=128)
    test_emb = (
        test_embeddings if test_embeddings is not None else encoder.encode(test.texts, 128)
    )
    results = {}
    for head in heads:
        if head == "logreg":
            pred = logistic_regression_predict(train_emb, train.labels, test_emb)
        else:
            h = make_head("prototype" if head == "refined" else head, temperature)
            h.fit(train_emb, train.labels).refine(100 if head == "refined" else 0)
            pred = [h.labels[i] for i in h.predict_proba(test_emb).argmax(1).tolist()]
        results[head] = {
            "accuracy": accuracy(test.labels, pred),
            "macro_f1": macro_f1(test.labels, pred),
        }
    return results


def inner_loop_accuracy(
    encoder_name: str,
    train: IntentCorpus,
    test: IntentCorpus,
    epochs: int,
    seed: int,
    name_weights: Sequence[float] = (),
    **config: object,
) -> Dict[str, float]:
    """Accuracy of the component's model fitted as `rasa train` fits it (the encoder inner
    loop, then the head), on a fresh copy of the encoder. ``config`` overrides
    :class:`FewShotConfig` fields (e.g. ``finetune_layers``).

    ``name_weights``: also the accuracy with the head rebuilt at each ``label_name_weight``
    (key ``accuracy_names_<w>``) over the same adapted encoder: the inner loop does not read
    intent names, so this is what `rasa train` gives at that weight, for one adaptation."""
    import time

    from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel

    settings = {"out_of_scope_detection": False, **config}
    model = FewShotIntentModel(FewShotConfig(
        encoder=encoder_name, epochs=epochs, random_seed=seed, device="cpu", **settings
    ))
    start = time.perf_counter()
    adapt(model, train.texts, train.labels)
    seconds = time.perf_counter() - start
    test_emb = model.embed(test.texts)
    result = {"adapt_seconds": seconds, **_head_accuracy(model, test_emb, test)}
    if name_weights:
        train_emb = model.embed(train.texts)
        for weight in name_weights:
            model.config.label_name_weight = float(weight)
            model.fit_embeddings(train_emb, train.labels, train.texts)
            result[f"accuracy_names_{weight:g}"] = _head_accuracy(
                model, test_emb, test)["accuracy"]
    return result


def _head_accuracy(model, test_emb: torch.Tensor, test: IntentCorpus) -> Dict[str, float]:
    """Accuracy and macro-F1 of a fitted model's top intent (as :meth:`predict` ranks it)."""
    probs, in_scope, _ = model.predict_embeddings(test_emb)
    probs, _ = model.withhold_unreadable(test.texts, probs, in_scope)
    pred = [model.labels[i] for i in probs.argmax(1).tolist()]
    return {"accuracy": accuracy(test.labels, pred), "macro_f1": macro_f1(test.labels, pred)}

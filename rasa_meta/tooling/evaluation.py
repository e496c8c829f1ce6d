"""Metrics and few-shot evaluation of an encoder on a labelled train/test pair (no Rasa)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rasa_meta.runtime.encoder import SentenceEncoder
from rasa_meta.runtime.heads import make_head
from rasa_meta.training.corpus import IntentCorpus, data_root, load_split, registered


def accuracy(gold: Sequence[str], pred: Sequence[Optional[str]]) -> float:
    if len(gold) != len(pred):
        raise ValueError("gold and pred differ in length")
    return sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0


def macro_f1(gold: Sequence[str], pred: Sequence[Optional[str]]) -> float:
    """Unweighted mean of per-class F1 over the gold classes."""
    classes = sorted(set(gold))
    if not classes:
        return 0.0
    scores = []
    for c in classes:
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    if len(values) == 0:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def auroc(positive_scores: Sequence[float], negative_scores: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos = np.asarray(positive_scores, dtype=float)
    neg = np.asarray(negative_scores, dtype=float)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("auroc needs positive and negative scores")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):  # average ranks of ties
        tie = allv == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    conf = np.asarray(confidences, dtype=float)
    ok = np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(ok[mask].mean() - conf[mask].mean())
    return float(ece)


def sample_shots(corpus: IntentCorpus, shots: int, seed: int) -> IntentCorpus:
    """``shots`` examples per intent drawn with a seed (all of them where there are fewer)."""
    rng = random.Random(seed)
    texts: List[str] = []
    labels: List[str] = []
    for intent, examples in sorted(corpus.by_intent().items()):
        chosen = rng.sample(examples, min(shots, len(examples)))
        texts += chosen
        labels += [intent] * len(chosen)
    return IntentCorpus(f"{corpus.name}:{shots}-shot:seed{seed}", texts, labels, corpus.domains)


def few_shot_task(
    dataset: str, shots: str, seed: int = 0, root: Optional[Path] = None, test_split: str = "test"
) -> Tuple[IntentCorpus, IntentCorpus]:
    """The (train, test) pair of a few-shot evaluation on a registered corpus.

    Corpora with DialoGLUE splits use their fixed ``train_5`` / ``train_10`` (``seed`` is
    ignored); ``full`` is the whole ``train``. Others draw ``shots`` examples per intent from
    ``train`` with ``seed``; an intent with too few there is drawn from ``valid``, and an
    intent seen only in the test split (10 of SGD's) from the test split itself, those
    examples then leaving the test set, so the label set stays complete.
    """
    root = root or data_root()
    info = registered(dataset)
    folder = root / (info.folder if info else dataset)
    test = load_split(folder / test_split, name=f"{dataset}/{test_split}")
    if shots == "full":
        return load_split(folder / "train", name=f"{dataset}/train"), test
    if info is not None and info.few_shot_splits:
        return load_split(folder / f"train_{shots}", name=f"{dataset}/train_{shots}"), test
    k = int(shots)
    rng = random.Random(seed)
    pools = [load_split(folder / s).by_intent() for s in ("train", "valid")
             if s != test_split and (folder / s / "seq.in").is_file()]
    test_groups = test.by_intent()
    texts: List[str] = []
    labels: List[str] = []
    taken_from_test: set = set()
    for intent in sorted(set(test.labels) | set(pools[0])):
        pool = next((p[intent] for p in pools if len(p.get(intent, [])) >= k), None)
        from_test = pool is None
        if from_test:
            pool = test_groups[intent]
        chosen = rng.sample(sorted(pool), min(k, len(pool)))
        if from_test:
            taken_from_test.update((t, intent) for t in chosen)
        texts += chosen
        labels += [intent] * len(chosen)
    train = IntentCorpus(f"{dataset}/{k}-shot:seed{seed}", texts, labels, test.domains)
    if taken_from_test:
        kept = [(t, lab) for t, lab in zip(test.texts, test.labels)
                if (t, lab) not in taken_from_test]
        test = IntentCorpus(test.name, [t for t, _ in kept], [lab for _, lab in kept],
                            test.domains)
    return train, test


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
    temperature: float = 0.05,
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


def cached_encode(
    encoder: SentenceEncoder, texts: Sequence[str], cache_dir: Optional[str] = None
) -> torch.Tensor:
    """Encode, reusing an on-disk copy keyed by the encoder's weights and the texts."""
    if cache_dir is None:
        return encoder.encode(list(texts), batch_size=128, show_progress=len(texts) > 500)
    import hashlib
    from pathlib import Path

    from rasa_meta.runtime.encoder import encoder_fingerprint

    key = hashlib.sha256(
        (encoder_fingerprint(encoder.name_or_path) + str(encoder.max_length) + "\n".join(texts))
        .encode("utf-8")
    ).hexdigest()[:24]
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        return torch.load(path)
    emb = encoder.encode(list(texts), batch_size=128, show_progress=len(texts) > 500)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(emb, path)
    return emb


def inner_loop_accuracy(
    encoder_name: str,
    train: IntentCorpus,
    test: IntentCorpus,
    epochs: int,
    seed: int,
    **config: object,
) -> Dict[str, float]:
    """Accuracy of the component's model fitted as `rasa train` fits it (the encoder inner
    loop, then the head), on a fresh copy of the encoder. ``config`` overrides
    :class:`FewShotConfig` fields (e.g. ``finetune_layers``)."""
    import time

    from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel

    settings = {"out_of_scope_detection": False, **config}
    model = FewShotIntentModel(FewShotConfig(
        encoder=encoder_name, epochs=epochs, random_seed=seed, device="cpu", **settings
    ))
    start = time.perf_counter()
    model.fit(train.texts, train.labels)
    seconds = time.perf_counter() - start
    probs, _, _ = model.predict(test.texts)
    pred = [model.labels[i] for i in probs.argmax(1).tolist()]
    return {
        "accuracy": accuracy(test.labels, pred),
        "macro_f1": macro_f1(test.labels, pred),
        "adapt_seconds": seconds,
    }

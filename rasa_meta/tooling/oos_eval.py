"""Out-of-scope evaluation: in-scope accuracy, OOS recall, AUROC and calibration error.

The score is the classifier's own confidence (what FallbackClassifier compares to its
threshold). The threshold is chosen on validation data only (in-scope ``valid`` plus the OOS
``valid`` split), maximising the mean of in-scope accuracy and OOS recall, then applied to test.

What ``rasa-meta benchmark --oos`` and ``rasa-meta threshold`` use lives here; the studies of
other in-scope scores and of simulated out-of-scope tasks are research code
(``research/oos.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch

from rasa_meta.runtime.model import FewShotIntentModel
from rasa_meta.tooling.evaluation import auroc, expected_calibration_error


@dataclass
class ScoredSplit:
    """Top confidence, predicted intent and gold label (``None`` for OOS) per message."""

    confidence: np.ndarray
    predicted: List[str]
    gold: List[object]


def score(model: FewShotIntentModel, embeddings: torch.Tensor, gold: Sequence) -> ScoredSplit:
    probs, _, _ = model.predict_embeddings(embeddings)
    top = probs.max(1)
    return ScoredSplit(
        top.values.numpy(), [model.labels[i] for i in top.indices.tolist()], list(gold)
    )


def _rates(split_in: ScoredSplit, split_oos: ScoredSplit, threshold: float) -> tuple:
    accepted = split_in.confidence >= threshold
    correct = np.array([p == g for p, g in zip(split_in.predicted, split_in.gold)])
    in_acc = float((accepted & correct).mean())
    recall = float((split_oos.confidence < threshold).mean())
    return in_acc, recall


def choose_threshold(
    valid_in: ScoredSplit,
    valid_oos: ScoredSplit,
    max_in_scope_drop: float = None,
    min_in_scope: float = None,
) -> float:
    """The confidence threshold chosen on validation data.

    By default it maximises (in-scope accuracy + OOS recall) / 2. With ``max_in_scope_drop``
    it maximises OOS recall among thresholds that cost at most that much in-scope accuracy
    (absolute, e.g. 0.01) compared with no threshold. With ``min_in_scope`` it maximises OOS
    recall among thresholds that keep at least that in-scope accuracy (e.g. 0.95).
    """
    candidates = np.unique(np.concatenate([valid_in.confidence, valid_oos.confidence, [0.0]]))
    if min_in_scope is not None:
        floor = min(min_in_scope, _rates(valid_in, valid_oos, 0.0)[0])
        max_in_scope_drop = 0.0  # select by recall above the floor
    else:
        floor = _rates(valid_in, valid_oos, 0.0)[0] - (max_in_scope_drop or 0.0)
    best, best_t = -1.0, 0.0
    for t in candidates:
        acc, rec = _rates(valid_in, valid_oos, float(t))
        if max_in_scope_drop is None:
            score = (acc + rec) / 2
        elif acc >= floor - 1e-12:
            score = rec
        else:
            continue
        if score > best:
            best, best_t = score, float(t)
    return best_t


@dataclass
class OOSReport:
    threshold: float
    in_scope_accuracy: float
    oos_recall: float
    auroc: float
    ece: float
    accuracy_without_rejection: float

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def evaluate_oos(
    model: FewShotIntentModel,
    valid_in: ScoredSplit,
    valid_oos: ScoredSplit,
    test_in: ScoredSplit,
    test_oos: ScoredSplit,
    threshold: float = None,
    max_in_scope_drop: float = None,
    min_in_scope: float = None,
) -> OOSReport:
    """Metrics on test with a threshold from valid (or the given one)."""
    t = (choose_threshold(valid_in, valid_oos, max_in_scope_drop, min_in_scope)
         if threshold is None else threshold)
    acc, recall = _rates(test_in, test_oos, t)
    correct = [p == g for p, g in zip(test_in.predicted, test_in.gold)]
    return OOSReport(
        threshold=t,
        in_scope_accuracy=acc,
        oos_recall=recall,
        auroc=auroc(test_in.confidence, test_oos.confidence),
        ece=expected_calibration_error(test_in.confidence, correct),
        accuracy_without_rejection=float(np.mean(correct)),
    )


# --- the datasets' out-of-scope protocols ---------------------------------------------------

def oos_protocols(root) -> Dict[str, Dict[str, object]]:
    """Split folders of each OOS benchmark: in-scope train/valid/test and OOS valid/test."""
    from pathlib import Path

    root = Path(root)
    b = root / "BANKING77-OOS"
    return {
        "CLINC150": {
            "family": "CLINC150",
            "train": root / "CLINC150" / "train",
            "valid": root / "CLINC150" / "valid",
            "test": root / "CLINC150" / "test",
            "oos": {"oos": (root / "CLINC150/oos/valid", root / "CLINC150/oos/test")},
        },
        "BANKING77-OOS": {
            "family": "BANKING77",
            "train": b / "train",
            "valid": b / "valid",
            "test": b / "test",
            "oos": {
                "id-oos": (b / "id-oos" / "valid", b / "id-oos" / "test"),
                "ood-oos": (b / "ood-oos" / "valid", b / "ood-oos" / "test"),
            },
        },
    }


def run_oos_benchmark(
    encoders: Dict[str, str],
    datasets: Sequence[str] = ("CLINC150", "BANKING77-OOS"),
    shots: Sequence[str] = ("10", "full"),
    seed: int = 0,
    root=None,
    cache_dir: str = None,
    config_overrides: Dict = None,
) -> List[Dict[str, object]]:
    """OOS metrics per dataset, shots and OOS kind.

    ``encoders`` maps a dataset family to the encoder evaluated on it, so each number comes
    from an encoder whose meta-training never saw that dataset.
    """
    from tqdm.auto import tqdm

    from rasa_meta.runtime.encoder import SentenceEncoder
    from rasa_meta.runtime.model import FewShotConfig
    from rasa_meta.tooling.evaluation import cached_encode, sample_shots
    from rasa_meta.training.corpus import data_root, load_split

    root = root or data_root()
    rows: List[Dict[str, object]] = []
    protocols = oos_protocols(root)
    for name in datasets:
        proto = protocols[name]
        encoder_name = encoders.get(str(proto["family"]), encoders.get("*", "default"))
        encoder = SentenceEncoder.from_pretrained(encoder_name)
        train_full = load_split(proto["train"])
        valid = load_split(proto["valid"])
        test = load_split(proto["test"])
        v_emb = cached_encode(encoder, valid.texts, cache_dir)
        t_emb = cached_encode(encoder, test.texts, cache_dir)
        for shot in tqdm(shots, desc=f"oos {name}", leave=False):
            train = train_full if shot == "full" else sample_shots(train_full, int(shot), seed)
            config = FewShotConfig(encoder=encoder_name, **(config_overrides or {}))
            model = FewShotIntentModel(config, encoder).fit_embeddings(
                cached_encode(encoder, train.texts, cache_dir), train.labels, train.texts
            )
            valid_in = score(model, v_emb, valid.labels)
            test_in = score(model, t_emb, test.labels)
            for kind, (oos_valid_dir, oos_test_dir) in proto["oos"].items():
                ov, ot = load_split(oos_valid_dir), load_split(oos_test_dir)
                valid_oos = score(model, cached_encode(encoder, ov.texts, cache_dir), ov.labels)
                test_oos = score(model, cached_encode(encoder, ot.texts, cache_dir), ot.labels)
                for rule, drop in (("balanced", None), ("in-scope -1pt", 0.01)):
                    report = evaluate_oos(model, valid_in, valid_oos, test_in, test_oos,
                                          max_in_scope_drop=drop)
                    rows.append({"dataset": name, "oos": kind, "shots": shot, "seed": seed,
                                 "encoder": encoder_name, "rule": rule, **report.to_dict()})
    return rows


def oos_markdown(rows: List[Dict[str, object]]) -> str:
    """The OOS rows as a markdown table (percentages)."""
    lines = [
        "| dataset | OOS kind | shots | encoder | threshold rule | in-scope acc % "
        "| OOS recall % | AUROC % | ECE % | threshold |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['oos']} | {r['shots']} | `{r['encoder']}` | {r['rule']} "
            f"| {100 * r['in_scope_accuracy']:.1f} | {100 * r['oos_recall']:.1f} "
            f"| {100 * r['auroc']:.1f} | {100 * r['ece']:.1f} | {r['threshold']:.3f} |"
        )
    return "\n".join(lines) + "\n"

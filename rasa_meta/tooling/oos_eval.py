"""Out-of-scope evaluation: in-scope accuracy, OOS recall, AUROC and calibration error.

The score is the classifier's own confidence (what FallbackClassifier compares to its
threshold). The threshold is chosen on validation data only (in-scope ``valid`` plus the OOS
``valid`` split), maximising the mean of in-scope accuracy and OOS recall, then applied to test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rasa_meta.runtime.model import FewShotIntentModel
from rasa_meta.tooling.evaluation import auroc, expected_calibration_error
from rasa_meta.training.adapt import adapt


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


# --- in-scope score candidates and out-of-scope tasks ---------------------------------------

SCORE_CANDIDATES = (
    "max_cosine", "nearest_example", "max_logit", "energy", "mahalanobis", "similarity_rule",
    "learned",
)


def candidate_scores(
    model: FewShotIntentModel, emb: torch.Tensor, scorer=None
) -> Dict[str, np.ndarray]:
    """Every in-scope score candidate for each query (higher: more in scope).

    ``max_cosine``: best prototype similarity; ``nearest_example``: mean cosine to the 3
    nearest examples; ``max_logit`` / ``energy``: max and log-sum-exp of the refined head's
    logits; ``mahalanobis``: minus the smallest distance to an intent mean under the shared,
    shrunk covariance of the examples; ``similarity_rule``: the leave-one-out rule;
    ``learned``: the meta-trained scorer (``scorer``, else the encoder's).
    """
    from rasa_meta.runtime.in_scope import (
        BotStatistics,
        InScopeScorer,
        SimilarityCalibrator,
        in_scope_features,
    )

    head = model.head
    emb = emb.float()
    sims = head.similarities(emb)
    probs = head.predict_proba(emb)
    classes = head.prototypes if head.weights is None else F.normalize(head.weights, dim=-1)
    logits = emb @ classes.T / head.temperature
    support, targets = head.support, head.support_targets
    k = min(3, len(support))
    means = torch.zeros(len(head.labels), support.shape[1]).index_add_(0, targets, support)
    means = means / torch.bincount(targets, minlength=len(head.labels)).clamp(min=1).unsqueeze(1)
    residual = support - means[targets]
    cov = residual.T @ residual / max(len(support) - 1, 1)
    shrunk = 0.5 * cov + 0.5 * torch.eye(cov.shape[0]) * cov.diagonal().mean().clamp(min=1e-6)
    precision = torch.linalg.inv(shrunk)
    diff = emb.unsqueeze(1) - means.unsqueeze(0)  # (n, c, d)
    maha = torch.einsum("ncd,de,nce->nc", diff, precision, diff)
    out = {
        "max_cosine": sims.max(1).values,
        "nearest_example": (emb @ support.T).topk(k, dim=1).values.mean(1),
        "max_logit": logits.max(1).values,
        "energy": torch.logsumexp(logits, 1),
        "mahalanobis": -maha.min(1).values,
        "similarity_rule": SimilarityCalibrator.fit(head, model.config.oos_quantile)(
            sims.max(1).values),
    }
    scorer = scorer if scorer is not None else model._scorer()
    if isinstance(scorer, InScopeScorer):
        out["learned"] = scorer(in_scope_features(head, emb, BotStatistics.of(head), sims, probs))
    return {name: v.detach().numpy() for name, v in out.items()}


@dataclass
class OOSTask:
    """One out-of-scope evaluation: a bot's training data, in-scope and OOS valid/test."""

    dataset: str
    oos: str
    shots: str
    seed: int
    train: object  # IntentCorpus
    valid: object
    test: object
    valid_oos: List[str]
    test_oos: List[str]


def held_out_intents(corpus_names: Sequence[str], fraction: float, seed: int) -> List[str]:
    """The intents treated as out-of-scope: a seeded ``fraction`` of those in every split."""
    import random

    pool = sorted(corpus_names)
    return sorted(random.Random(seed).sample(pool, max(1, round(fraction * len(pool)))))


def oos_tasks(
    dataset: str, shots: Sequence[str], seed: int = 0, root=None, held_out_fraction: float = 0.25
) -> List[OOSTask]:
    """The OOS tasks of a dataset: CLINC150 ``oos``, BANKING77-OOS ``id-oos`` and ``ood-oos``,
    or (any other corpus with valid and test splits) a quarter of its intents held out."""
    from pathlib import Path

    from rasa_meta.tooling.evaluation import sample_shots
    from rasa_meta.training.corpus import data_root, load_split

    root = Path(root or data_root())
    tasks: List[OOSTask] = []
    protocols = oos_protocols(root)
    if dataset in protocols:
        proto = protocols[dataset]
        train_full = load_split(proto["train"])
        valid, test = load_split(proto["valid"]), load_split(proto["test"])
        kinds = {k: (load_split(v).texts, load_split(t).texts)
                 for k, (v, t) in proto["oos"].items()}
    else:
        train_full = load_split(root / dataset / "train")
        valid, test = load_split(root / dataset / "valid"), load_split(root / dataset / "test")
        shared = set(train_full.intents) & set(valid.intents) & set(test.intents)
        held = set(held_out_intents(shared, held_out_fraction, seed))
        keep = [i for i in train_full.intents if i not in held]
        kinds = {"held-out intents": (
            [t for t, lab in zip(valid.texts, valid.labels) if lab in held],
            [t for t, lab in zip(test.texts, test.labels) if lab in held],
        )}
        train_full = train_full.subset(keep)
        valid = valid.subset([i for i in valid.intents if i in keep])
        test = test.subset([i for i in test.intents if i in keep])
    for shot in shots:
        fixed = root / dataset / f"train_{shot}"
        if shot == "full":
            train = train_full
        elif dataset == "CLINC150" and fixed.is_dir():  # the DialoGLUE split everyone reports on
            train = load_split(fixed)
        else:
            train = sample_shots(train_full, int(shot), seed)
        for kind, (valid_oos, test_oos) in kinds.items():
            tasks.append(OOSTask(dataset, kind, str(shot), seed, train, valid, test,
                                 valid_oos, test_oos))
    return tasks


def evaluate_task(
    task: OOSTask,
    encoder: str,
    config_overrides: Dict = None,
    methods: Sequence[str] = ("learned", "similarity"),
    default_threshold: float = 0.4,
    targets: Dict[str, float] = None,
    cache_dir: str = None,
    calibrations: Sequence[str] = (),
    raw_file: str = None,
) -> List[Dict[str, object]]:
    """Fit the component's model on ``task.train`` once and score valid/test.

    ``calibrations``: ``oos_calibration`` values to compare on the one fitted model (the
    held-out scores are measured once; ``leave_one_out`` ignores them); default: the
    configured one. ``raw_file``: where to save the fitted head, the held-out scores and
    every split's embeddings, to study other calibration rules without refitting.

    One row per in-scope method: the AUROC of every score candidate on valid and test, and
    for the model's confidence (what FallbackClassifier thresholds) the test metrics at
    thresholds chosen on valid by each rule, at ``default_threshold`` and with no fallback.
    """
    import time

    from rasa_meta.runtime.model import FewShotConfig
    from rasa_meta.tooling.evaluation import cached_encode

    # the in-scope estimator is refitted per method below; ``True`` lets ``fit`` measure the
    # held-out calibration the component would
    overrides = dict(config_overrides or {})
    if "held_out" in calibrations:
        overrides["oos_calibration"] = "held_out"
    config = FewShotConfig(encoder=encoder, device="cpu", out_of_scope_detection=True,
                           **overrides)
    model = FewShotIntentModel(config)
    start = time.perf_counter()
    if config.epochs == 0:  # frozen encoder: embeddings can be cached
        emb = cached_encode(model.encoder, task.train.texts, cache_dir)
        model.fit_embeddings(emb, task.train.labels, task.train.texts)

        def encode(texts: List[str]) -> torch.Tensor:
            return cached_encode(model.encoder, texts, cache_dir)
    else:
        adapt(model, task.train.texts, task.train.labels)

        def encode(texts: List[str]) -> torch.Tensor:
            return model.embed(texts)
    fit_seconds = time.perf_counter() - start
    emb = {"valid": encode(task.valid.texts), "test": encode(task.test.texts),
           "valid_oos": encode(task.valid_oos), "test_oos": encode(task.test_oos)}
    gold = {"valid": task.valid.labels, "test": task.test.labels,
            "valid_oos": [None] * len(task.valid_oos), "test_oos": [None] * len(task.test_oos)}
    if raw_file:
        from pathlib import Path

        Path(raw_file).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"head": model.head, "held_out": model.held_out, "embeddings": emb,
                    "gold": gold, "scorer": model._scorer(), "config": asdict(config)},
                   raw_file)
    candidates = {name: candidate_scores(model, e) for name, e in emb.items()}
    aurocs = {
        split: {c: auroc(candidates[split][c], candidates[f"{split}_oos"][c])
                for c in candidates[split]}
        for split in ("valid", "test")
    }
    # The score as FallbackClassifier uses it: answers that are right should rank above both
    # out-of-scope messages and in-scope messages the top intent gets wrong.
    top = model.head.predict_proba(emb["valid"]).argmax(1).tolist()
    right = {"valid": np.array([model.labels[i] == g for i, g in zip(top, task.valid.labels)])}
    top = model.head.predict_proba(emb["test"]).argmax(1).tolist()
    right["test"] = np.array([model.labels[i] == g for i, g in zip(top, task.test.labels)])
    auroc_right = {
        split: {c: auroc(candidates[split][c][right[split]], np.concatenate(
            [candidates[split][c][~right[split]], candidates[f"{split}_oos"][c]]))
            for c in candidates[split]}
        for split in ("valid", "test")
    }
    rules: Dict[str, Dict] = {"balanced": {}, "in-scope -3pt": {"max_in_scope_drop": 0.03}}
    for name, floor in (targets or {}).items():
        rules[name] = {"min_in_scope": floor}
    rows = []
    held_out = model.held_out
    for calibration, method in [(c, m) for c in calibrations or [config.oos_calibration]
                                for m in methods]:
        model.held_out = held_out if calibration == "held_out" else None
        model.in_scope = model.fit_in_scope(method)
        splits = {name: score(model, e, gold[name]) for name, e in emb.items()}
        args = (model, splits["valid"], splits["valid_oos"], splits["test"], splits["test_oos"])
        operating = {rule: evaluate_oos(*args, **kw).to_dict() for rule, kw in rules.items()}
        operating["default threshold"] = evaluate_oos(*args, threshold=default_threshold).to_dict()
        operating["no fallback"] = evaluate_oos(*args, threshold=0.0).to_dict()
        valid_at_default = _rates(splits["valid"], splits["valid_oos"], default_threshold)
        grid = [round(0.05 * i, 2) for i in range(1, 20)]
        sweep = {split: {str(t): dict(zip(("in_scope_accuracy", "oos_recall"), _rates(
            splits[split], splits[f"{split}_oos"], t))) for t in grid}
            for split in ("valid", "test")}
        rows.append({
            "dataset": task.dataset, "oos": task.oos, "shots": task.shots, "seed": task.seed,
            "encoder": encoder, "in_scope_method": method,
            "config": {**(config_overrides or {}), "oos_calibration": calibration},
            "intents": len(model.labels), "train_examples": len(task.train.texts),
            "fit_seconds": round(fit_seconds, 1),
            "valid_best_threshold": choose_threshold(splits["valid"], splits["valid_oos"]),
            "valid_at_default": {"in_scope_accuracy": valid_at_default[0],
                                 "oos_recall": valid_at_default[1],
                                 "no_fallback": _rates(splits["valid"], splits["valid_oos"],
                                                       0.0)[0]},
            "auroc": aurocs, "auroc_right_vs_rest": auroc_right,
            "operating_points": operating, "threshold_sweep": sweep,
        })
    return rows

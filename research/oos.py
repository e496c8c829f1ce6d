"""Out-of-scope research: in-scope score candidates, and out-of-scope tasks on the corpora.

``scripts/oos_evidence.py`` compares every candidate score (:func:`candidate_scores`) and the
component's confidence at thresholds chosen on valid (:func:`evaluate_task`) on the tasks of
:func:`oos_tasks`: CLINC150 ``oos``, BANKING77-OOS ``id-oos`` / ``ood-oos``, or a quarter of
another corpus's intents held out. ``scripts/traffic_share.py`` reads the same tasks. The
thresholds and metrics are the product's (:mod:`rasa_meta.tooling.oos_eval`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rasa_meta.runtime.model import FewShotIntentModel
from rasa_meta.tooling.evaluation import auroc
from rasa_meta.tooling.oos_eval import (
    _rates,
    choose_threshold,
    evaluate_oos,
    oos_protocols,
    score,
)
from rasa_meta.training.adapt import adapt

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
    means = intent_means(head)
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


def intent_means(head) -> torch.Tensor:
    """(intents, dim) plain mean of each intent's examples: the centres of the Mahalanobis
    score, around which the examples' covariance is measured. Not the head's prototypes, which
    are normalised and may count the intent's embedded name as examples."""
    n = len(head.labels)
    sums = torch.zeros(n, head.support.shape[1]).index_add_(0, head.support_targets, head.support)
    return sums / torch.bincount(head.support_targets, minlength=n).clamp(min=1).unsqueeze(1)


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

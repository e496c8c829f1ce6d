"""Choosing the FallbackClassifier threshold: in-scope accuracy against OOS recall.

``rasa-meta threshold`` parses in-scope test messages (Rasa NLU YAML, with their intents) and
out-of-scope ones (YAML or one message per line) with a trained model, sweeps the threshold,
plots the trade-off and prints the threshold for the chosen rule. A fallback counts as wrong
for an in-scope message and as right for an out-of-scope one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rasa_meta.tooling.oos_eval import ScoredSplit, _rates, choose_threshold


@dataclass
class ThresholdPoint:
    threshold: float
    in_scope_accuracy: float
    oos_recall: float
    # thresholds in (tied_from, tied_to] give exactly this accuracy and recall
    tied_from: Optional[float] = None
    tied_to: Optional[float] = None


def sweep(in_scope: ScoredSplit, oos: ScoredSplit, steps: int = 101) -> List[ThresholdPoint]:
    """In-scope accuracy and OOS recall at evenly spaced thresholds in [0, 1]."""
    return [ThresholdPoint(float(t), *_rates(in_scope, oos, float(t)))
            for t in np.linspace(0.0, 1.0, steps)]


def recommend(
    in_scope: ScoredSplit, oos: ScoredSplit, max_in_scope_drop: Optional[float] = 0.03
) -> ThresholdPoint:
    """The threshold with the most OOS recall that costs at most ``max_in_scope_drop`` of
    in-scope accuracy (None: the best mean of the two).

    Every threshold between two neighbouring confidences gives the same result, and often a
    wide range does (no message scores in between): the middle of the range of thresholds
    with exactly the chosen accuracy and recall is returned, the farthest from messages on
    either side, with the range itself.
    """
    t = choose_threshold(in_scope, oos, max_in_scope_drop)
    low, high = tied_range(in_scope, oos, t)
    middle = (low + high) / 2
    return ThresholdPoint(middle, *_rates(in_scope, oos, middle), tied_from=low, tied_to=high)


def tied_range(in_scope: ScoredSplit, oos: ScoredSplit, threshold: float) -> Tuple[float, float]:
    """(low, high): every threshold in (low, high] gives the accuracy and recall of
    ``threshold``. The outcome only changes at the messages' confidences, so the range runs
    between the confidences nearest to ``threshold`` whose side changes the outcome."""
    rates = _rates(in_scope, oos, threshold)
    points = np.unique(np.concatenate([in_scope.confidence, oos.confidence, [0.0, 1.0]]))
    below = points[points < threshold][::-1]
    above = points[points > threshold]
    low = 0.0
    for c in below:  # thresholds just above c behave like c's upper neighbour
        if _rates(in_scope, oos, float(c)) != rates:
            low = float(c)
            break
    high = float(threshold)
    for c in above:
        if _rates(in_scope, oos, float(c)) != rates:
            break
        high = float(c)
    return low, high


def plot(points: Sequence[ThresholdPoint], chosen: ThresholdPoint, path: Path) -> None:
    """In-scope accuracy and OOS recall over thresholds, the chosen one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p.threshold for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t, [100 * p.in_scope_accuracy for p in points], label="in-scope accuracy")
    ax.plot(t, [100 * p.oos_recall for p in points], label="out-of-scope recall")
    ax.axvline(chosen.threshold, color="grey", linestyle="--",
               label=f"chosen threshold {chosen.threshold:.2f}")
    ax.set_xlabel("FallbackClassifier threshold")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_messages(path: Path) -> Tuple[List[str], List[Optional[str]]]:
    """Texts and intents of a Rasa NLU YAML file, or texts of a plain file (no intents)."""
    if path.suffix in {".yml", ".yaml"}:
        from rasa_meta.training.corpus import load_rasa_nlu

        corpus = load_rasa_nlu(path)
        return list(corpus.texts), list(corpus.labels)
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t]
    return texts, [None] * len(texts)


def parse_with_model(model_path: str, texts: Sequence[str]) -> ScoredSplit:
    """Top intent and its confidence for each text, from a trained Rasa model.

    The intent classifier's own ranking is read (``nlu_fallback`` skipped), so the sweep sees
    the confidence FallbackClassifier compares with its threshold.
    """
    import asyncio

    from rasa_meta.runtime.progress import progress
    from rasa_meta.tooling.rasa_agent import load_agent

    agent = load_agent(model_path)

    async def parse_all() -> List[Dict]:
        return [await agent.parse_message(t) for t in progress(texts, desc="parsing")]

    confidence, predicted = [], []
    for parsed in asyncio.run(parse_all()):
        ranking = [r for r in parsed.get("intent_ranking") or [] if r.get("name") != "nlu_fallback"]
        top = ranking[0] if ranking else {"name": None, "confidence": 0.0}
        predicted.append(top["name"])
        confidence.append(float(top["confidence"]))
    return ScoredSplit(np.array(confidence), predicted, [])


def run(
    model_path: str,
    in_scope_file: Path,
    oos_file: Path,
    output_dir: Path,
    max_in_scope_drop: Optional[float] = 0.03,
) -> Dict[str, object]:
    """Parse both files, sweep, plot, and write ``threshold.json``; returns the report."""
    texts, labels = read_messages(in_scope_file)
    if any(label is None for label in labels):
        raise ValueError(f"'{in_scope_file}' must be Rasa NLU YAML with the messages' intents.")
    oos_texts, _ = read_messages(oos_file)
    if not texts or not oos_texts:
        raise ValueError("Both files need at least one message.")
    in_scope = parse_with_model(model_path, texts)
    in_scope.gold = list(labels)
    oos = parse_with_model(model_path, oos_texts)
    oos.gold = [None] * len(oos_texts)
    points = sweep(in_scope, oos)
    chosen = recommend(in_scope, oos, max_in_scope_drop)
    output_dir.mkdir(parents=True, exist_ok=True)
    plot(points, chosen, output_dir / "threshold.png")
    report = {
        "model": str(model_path), "in_scope_messages": len(texts), "oos_messages": len(oos_texts),
        "rule": "balanced" if max_in_scope_drop is None
        else f"most OOS recall with in-scope accuracy at most {100 * max_in_scope_drop:g} "
             f"points below no fallback",
        "chosen": asdict(chosen), "no_fallback": asdict(points[0]),
        "sweep": [asdict(p) for p in points],
    }
    (output_dir / "threshold.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report

"""How each in-scope calibration rule sets the learned score's scale, from saved fits.

    python scripts/oos_calibration_study.py runs/oos_raw/*.pt \
        --output docs/results/out_of_scope/oos_calibration_study.json

Reads the fitted heads, held-out scores and split embeddings that ``scripts/oos_evidence.py``
saves (``--raw-dir``), applies every rule's offset to the learned scorer's logits and reports,
at the recommended threshold, the in-scope accuracy lost against no fallback and the OOS
recall, on valid (for choosing) and on test. A rule sets the logit offset of a bot from its
own examples only:

- ``leave_one_out q``: the q-quantile of the adapted examples' leave-one-out logits;
- ``held_out q``: the q-quantile of the held-out examples' logits (one per intent, scored by
  an encoder adapted without them);
- ``shifted q``: the leave-one-out q-quantile, moved by how much lower the held-out examples'
  median logit is than the leave-one-out median (the tail's shape from every example, the
  inner loop's optimism from the held-out ones);
- ``lenient q``: whichever of the leave-one-out and held-out q-quantiles falls back less.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean
from typing import Callable, Dict

import torch

from rasa_meta.runtime.in_scope import BotStatistics, in_scope_features, leave_one_out_features

QUANTILES = (0.01, 0.02, 0.05, 0.1)


def rules() -> Dict[str, Callable]:
    """Rule name → f(leave-one-out logits, held-out logits) → offset."""
    out: Dict[str, Callable] = {"none": lambda loo, held: 0.0}
    for q in QUANTILES:
        out[f"leave_one_out {q}"] = lambda loo, held, q=q: -float(torch.quantile(loo, q))
        out[f"held_out {q}"] = lambda loo, held, q=q: -float(torch.quantile(held, q))
        out[f"shifted {q}"] = lambda loo, held, q=q: -float(
            torch.quantile(loo, q) + held.median() - loo.median())
        out[f"lenient {q}"] = lambda loo, held, q=q: max(
            -float(torch.quantile(loo, q)), -float(torch.quantile(held, q)))
    return out


def study(path: Path, threshold: float) -> Dict[str, object]:
    raw = torch.load(path, weights_only=False)
    head, scorer, emb, gold = raw["head"], raw["scorer"], raw["embeddings"], raw["gold"]
    stats = BotStatistics.of(head)
    loo = scorer.logits(leave_one_out_features(head, stats))
    held = scorer.logits(raw["held_out"].features)
    logits = {k: scorer.logits(in_scope_features(head, e, stats)) for k, e in emb.items()}
    correct = {k: torch.tensor([head.labels[i] == g for i, g in zip(
        head.predict_proba(emb[k]).argmax(1).tolist(), gold[k])]) for k in ("valid", "test")}
    logit_t = float(torch.logit(torch.tensor(threshold)))
    out: Dict[str, object] = {"file": str(path), "no_fallback": {
        k: float(correct[k].float().mean()) for k in correct}, "rules": {}}
    for name, rule in rules().items():
        offset = rule(loo, held)
        row = {"offset": offset}
        for split in ("valid", "test"):
            accepted = logits[split] + offset >= logit_t
            in_acc = float((accepted & correct[split]).float().mean())
            recall = float((logits[f"{split}_oos"] + offset < logit_t).float().mean())
            row[split] = {"drop": float(correct[split].float().mean()) - in_acc,
                          "oos_recall": recall}
        out["rules"][name] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("raw", nargs="+")
    p.add_argument("--threshold", type=float, default=0.4)
    p.add_argument("--output", default="")
    ns = p.parse_args()
    tasks = [study(Path(f), ns.threshold) for f in sorted(ns.raw)]
    names = list(rules())
    print(f"threshold {ns.threshold}: in-scope drop / OOS recall (%), valid | test")
    print(f"{'rule':22}" + "".join(f"{Path(t['file']).stem[:22]:>26}" for t in tasks)
          + f"{'worst drop v|t':>18}{'mean recall v|t':>18}")
    summary = {}
    for name in names:
        cells, worst, recall = [], {"valid": 0.0, "test": 0.0}, {"valid": [], "test": []}
        for t in tasks:
            r = t["rules"][name]
            cells.append(f"{100 * r['valid']['drop']:5.1f}/{100 * r['valid']['oos_recall']:4.0f}"
                         f" | {100 * r['test']['drop']:4.1f}/{100 * r['test']['oos_recall']:3.0f}")
            for s in ("valid", "test"):
                worst[s] = max(worst[s], r[s]["drop"])
                recall[s].append(r[s]["oos_recall"])
        summary[name] = {s: {"worst_drop": worst[s], "mean_recall": mean(recall[s])}
                         for s in ("valid", "test")}
        print(f"{name:22}" + "".join(f"{c:>26}" for c in cells)
              + f"{100 * worst['valid']:9.1f}|{100 * worst['test']:4.1f}"
              + f"{100 * mean(recall['valid']):11.1f}|{100 * mean(recall['test']):4.1f}")
    if ns.output:
        Path(ns.output).write_text(json.dumps(
            {"threshold": ns.threshold, "tasks": tasks, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()

"""Markdown tables from the OOS evidence (scripts/oos_evidence.py output).

    python scripts/oos_table.py docs/results/out_of_scope/oos_evidence.json \
        > docs/results/out_of_scope/oos_evidence.md
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from statistics import mean


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def calibration(r: dict) -> str:
    """The row's ``oos_calibration`` (rows from before the option: leave-one-out)."""
    return r.get("config", {}).get("oos_calibration", "leave_one_out")


def variant(r: dict) -> str:
    return f"{r['in_scope_method']}, {calibration(r).replace('_', '-')}"


def main(rows: list) -> None:
    print("## In-scope score candidates: AUROC on valid (%)\n")
    print("In-scope vs out-of-scope messages, then right answers vs (wrong answers + OOS), "
          "the model fitted as `rasa train` fits it (inner loop on).\n")
    candidates = list(rows[0]["auroc"]["valid"])
    print("| dataset | OOS kind | shots | " + " | ".join(candidates) + " |")
    print("|---|---|---|" + "---:|" * len(candidates))
    seen = set()
    means = defaultdict(list)
    means_right = defaultdict(list)
    for r in rows:
        key = (r["dataset"], r["oos"], r["shots"], r["seed"])
        if key in seen:
            continue
        seen.add(key)
        a = r["auroc"]["valid"]
        right = r.get("auroc_right_vs_rest", {}).get("valid")
        for c in candidates:
            means[c].append(a[c])
            if right:
                means_right[c].append(right[c])
        cells = [pct(a[c]) + (f" / {pct(right[c])}" if right else "") for c in candidates]
        print(f"| {r['dataset']} | {r['oos']} | {r['shots']} | " + " | ".join(cells) + " |")
    print("| **mean** | | | " + " | ".join(
        pct(mean(means[c])) + (f" / {pct(mean(means_right[c]))}" if means_right[c] else "")
        for c in candidates) + " |")

    print("\n## Operating points on test (%)\n")
    print("Thresholds chosen on valid: *best* maximises (in-scope accuracy + OOS recall) / 2, "
          "*-3pt* keeps valid in-scope accuracy within 3 points of no fallback, *target* keeps "
          "it at or above 95 % (full data) or 90 % (few-shot); *default* is the fixed "
          "threshold. In-scope accuracy counts a fallback as wrong.\n")
    print("| dataset | OOS kind | shots | method | no fallback | default: in-scope / recall "
          "| -3pt: in-scope / recall | target: in-scope / recall | best threshold on valid "
          "| AUROC | ECE |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        op = r["operating_points"]
        target = next((v for k, v in op.items() if k.startswith("in-scope >=")), None)
        print(
            f"| {r['dataset']} | {r['oos']} | {r['shots']} | {variant(r)} "
            f"| {pct(op['no fallback']['in_scope_accuracy'])} "
            f"| {pct(op['default threshold']['in_scope_accuracy'])} / "
            f"{pct(op['default threshold']['oos_recall'])} "
            f"| {pct(op['in-scope -3pt']['in_scope_accuracy'])} / "
            f"{pct(op['in-scope -3pt']['oos_recall'])} "
            + (f"| {pct(target['in_scope_accuracy'])} / {pct(target['oos_recall'])} "
               if target else "| – ")
            + f"| {r['valid_best_threshold']:.2f} | {pct(op['no fallback']['auroc'])} "
            f"| {pct(op['default threshold']['ece'])} |"
        )




def default_threshold_section(rows: list, max_drop: float = 0.03) -> None:
    """Per method, the highest threshold that costs at most ``max_drop`` of in-scope accuracy
    on *valid* for every task, and what it gives on test."""
    print(f"\n## One threshold for every bot (chosen on valid: the highest that costs at most "
          f"{100 * max_drop:g} points of in-scope accuracy on every task)\n")
    print("| method | threshold | tasks | test: mean in-scope drop | worst drop | mean OOS recall "
          "| lowest recall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in sorted({variant(r) for r in rows}):
        mine = [r for r in rows if variant(r) == name and "threshold_sweep" in r]
        if not mine:
            continue
        grid = sorted(mine[0]["threshold_sweep"]["valid"], key=float)
        ok = [t for t in grid if all(drop(r, "valid", t) <= max_drop + 1e-9 for r in mine)]
        if not ok:
            print(f"| {name} | none | {len(mine)} | | | | |")
            continue
        t = ok[-1]
        drops = [drop(r, "test", t) for r in mine]
        recalls = [r["threshold_sweep"]["test"][t]["oos_recall"] for r in mine]
        print(f"| {name} | {float(t):.2f} | {len(mine)} | {pct(mean(drops))} "
              f"| {pct(max(drops))} | {pct(mean(recalls))} | {pct(min(recalls))} |")


def drop(r: dict, split: str, t: str) -> float:
    """In-scope accuracy lost at threshold ``t`` against no fallback."""
    return (r["operating_points"]["no fallback"]["in_scope_accuracy"] if split == "test"
            else r["valid_at_default"]["no_fallback"]) - \
        r["threshold_sweep"][split][t]["in_scope_accuracy"]


def recommended_threshold_section(rows: list, threshold: str = "0.4") -> None:
    """Every task at the recommended FallbackClassifier threshold, on valid and test."""
    print(f"\n## At the recommended threshold ({threshold}): in-scope accuracy drop against no "
          f"fallback / OOS recall (%)\n")
    print("Target: a drop of at most 3 points with OOS recall of at least 60 % on every task.\n")
    names = sorted({variant(r) for r in rows})
    print("| dataset | OOS kind | shots | " + " | ".join(
        f"{n}: valid | {n}: test" for n in names) + " |")
    print("|---|---|---|" + "---:|---:|" * len(names))
    tasks = {}
    for r in rows:
        tasks.setdefault((r["dataset"], r["oos"], r["shots"], r["seed"]), {})[variant(r)] = r
    for (dataset, oos, shots, _), by in tasks.items():
        cells = []
        for n in names:
            r = by.get(n)
            if r is None:
                cells += ["–", "–"]
                continue
            for split in ("valid", "test"):
                recall = r["threshold_sweep"][split][threshold]["oos_recall"]
                cells.append(f"{pct(drop(r, split, threshold))} / {pct(recall)}")
        print(f"| {dataset} | {oos} | {shots} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    source = sys.argv[1] if len(sys.argv) > 1 else "docs/results/out_of_scope/oos_evidence.json"
    evidence = json.loads(open(source, encoding="utf-8").read())
    main(evidence)
    default_threshold_section(evidence)
    recommended_threshold_section(evidence)

"""Evidence for the traffic-share confidence: simulated traffic mixes, leave-one-dataset-out.

Two steps:

    # 1. fit the component's model on each task with the encoder trained without that
    #    corpus, and keep every valid / test message's in-scope logit (runs/traffic_raw/)
    python scripts/traffic_share.py fit --encoder CLINC150=runs/scorer/CLINC150 \
        --dataset CLINC150 --shots 10 full
    # 2. fit the logit maps and choose the default share on *valid* mixes, then measure every
    #    test mix: docs/results/traffic_share/traffic_share.json and traffic_share.md beside it
    python scripts/traffic_share.py analyse --output docs/results/traffic_share/traffic_share.json

A mix with out-of-scope share s draws in-scope and out-of-scope messages of one task at that
ratio (as many as the smaller pool allows; seeds 0-4). Overall accuracy counts an answer right
when it names the message's intent and a fallback right exactly for an out-of-scope message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # research/

from rasa_meta.runtime.traffic_share import (  # noqa: E402
    estimate_share,
    fallback_threshold,
    in_scope_probability,
    prior_log_odds,
)

RAW_DIR = Path("runs/traffic_raw")
MIXES = (0.0, 0.1, 0.3, 0.5, 0.7)
SEEDS = (0, 1, 2, 3, 4)
OLD_THRESHOLD = 0.4  # the FallbackClassifier threshold recommended with the old confidence
SHARE_GRID = tuple(round(0.05 * i, 2) for i in range(2, 15))  # 0.10 .. 0.70


# --- step 1: fit and score ------------------------------------------------------------------

def extra_valid_oos(dataset: str, kind: str, root: Path) -> List[str]:
    """Out-of-scope messages no model trains on, added to the small valid OOS pools."""
    from rasa_meta.training.corpus import load_split

    extra = {("CLINC150", "oos"): root / "CLINC150/oos/train",
             ("BANKING77-OOS", "id-oos"): root / "BANKING77-OOS/id-oos/train"}.get((dataset, kind))
    return list(load_split(extra).texts) if extra is not None and extra.is_dir() else []


def fit_and_score(dataset: str, encoder: str, shots: Sequence[str], seed: int,
                  raw_dir: Path = RAW_DIR) -> None:
    from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
    from rasa_meta.tooling.calibrate import message_logits
    from rasa_meta.training.adapt import adapt
    from rasa_meta.training.corpus import data_root
    from research.oos import oos_tasks

    root = Path(data_root())
    tasks = oos_tasks(dataset, shots, seed)
    by_train: Dict[str, list] = {}
    for task in tasks:  # BANKING77-OOS: one fitted model serves id-oos and ood-oos
        by_train.setdefault(task.shots, []).append(task)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for shot, group in by_train.items():
        first = group[0]
        config = FewShotConfig(encoder=encoder, device="cpu")
        model = FewShotIntentModel(config)
        start = time.perf_counter()
        adapt(model, first.train.texts, first.train.labels)
        fit_seconds = time.perf_counter() - start

        def scored(texts: Sequence[str], model=model) -> Dict[str, list]:
            z, top = message_logits(model, texts)
            return {"z": z.tolist(), "top": top}

        splits = {"valid": scored(first.valid.texts), "test": scored(first.test.texts)}
        for name, split in (("valid", first.valid), ("test", first.test)):
            splits[name]["right"] = [p == g for p, g in zip(splits[name]["top"], split.labels)]
        for task in group:
            valid_oos = list(task.valid_oos) + extra_valid_oos(dataset, task.oos, root)
            row = {
                "dataset": dataset, "oos": task.oos, "shots": shot, "seed": seed,
                "encoder": encoder, "intents": len(model.labels),
                "train_examples": len(first.train.texts), "fit_seconds": round(fit_seconds, 1),
                "offset": model.in_scope.offset,
                "valid": {"z": splits["valid"]["z"], "right": splits["valid"]["right"]},
                "test": {"z": splits["test"]["z"], "right": splits["test"]["right"]},
                "valid_oos": {"z": scored(valid_oos)["z"]},
                "test_oos": {"z": scored(task.test_oos)["z"]},
                "command": "python scripts/traffic_share.py " + " ".join(sys.argv[1:]),
            }
            name = f"{dataset}_{task.oos.replace(' ', '-')}_{shot}_{seed}.json"
            (raw_dir / name).write_text(json.dumps(row))
            print(f"{name}: fit {fit_seconds:.0f}s, valid {len(row['valid']['z'])} + "
                  f"{len(row['valid_oos']['z'])} OOS, test {len(row['test']['z'])} + "
                  f"{len(row['test_oos']['z'])} OOS", flush=True)


# --- step 2: maps, default share, mixes -----------------------------------------------------

def fit_logistic(z: np.ndarray, y: np.ndarray, w: np.ndarray, steps: int = 100
                 ) -> Tuple[float, float]:
    """Weighted logistic regression y ~ sigmoid(a z + b) by Newton's method."""
    x = np.stack([z, np.ones_like(z)], 1)
    beta = np.zeros(2)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ beta)))
        grad = x.T @ (w * (y - p))
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def even_mix_data(rows: Sequence[dict], split: str) -> Tuple[np.ndarray, ...]:
    """z, right, in-scope and weights of every task's split: half of each task's weight on
    its in-scope messages, half on its out-of-scope ones, every task weighing the same."""
    zs, right, inside, weights = [], [], [], []
    for r in rows:
        zi, zo = np.array(r[split]["z"]), np.array(r[f"{split}_oos"]["z"])
        zs += [zi, zo]
        right += [np.array(r[split]["right"], float), np.zeros(len(zo))]
        inside += [np.ones(len(zi)), np.zeros(len(zo))]
        weights += [np.full(len(zi), 0.5 / len(zi)), np.full(len(zo), 0.5 / len(zo))]
    return (np.concatenate(zs), np.concatenate(right), np.concatenate(inside),
            np.concatenate(weights) / len(rows))


def draw_mix(r: dict, split: str, share: float, seed: int) -> Tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    """(z, right, out-of-scope) of a mix with this out-of-scope share."""
    zi, right = np.array(r[split]["z"]), np.array(r[split]["right"], bool)
    zo = np.array(r[f"{split}_oos"]["z"])
    if share == 0:
        return zi, right, np.zeros(len(zi), bool)
    n_in = min(len(zi), int(len(zo) * (1 - share) / share))
    n_oos = int(round(n_in * share / (1 - share)))
    rng = np.random.default_rng(seed)
    a, b = rng.choice(len(zi), n_in, replace=False), rng.choice(len(zo), n_oos, replace=False)
    z = np.concatenate([zi[a], zo[b]])
    return z, np.concatenate([right[a], np.zeros(n_oos, bool)]), np.concatenate(
        [np.zeros(n_in, bool), np.ones(n_oos, bool)])


def accuracy(answered: np.ndarray, right: np.ndarray, oos: np.ndarray) -> float:
    return float(np.mean((answered & right) | (~answered & oos)))


def best_accuracy(score: np.ndarray, right: np.ndarray, oos: np.ndarray) -> float:
    """The highest overall accuracy of any threshold on ``score`` (the oracle)."""
    order = np.argsort(-score)
    # answering the k highest-scored: right answers among them + OOS among the rest
    gain = np.concatenate([[0], np.cumsum(right[order])])
    oos_rest = oos.sum() - np.concatenate([[0], np.cumsum(oos[order])])
    return float(((gain + oos_rest) / len(score)).max())


def confidence(z: np.ndarray, right_map: Tuple[float, float], share: float) -> np.ndarray:
    a, b = right_map
    return 1 / (1 + np.exp(-(a * z + b + prior_log_odds(share))))


def mix_metrics(z, right, oos, right_map, in_map, default_share) -> Dict[str, float]:
    conf = confidence(z, right_map, default_share)
    estimated = estimate_share(in_scope_probability(z, in_map))
    label_free = fallback_threshold(estimated, default_share)
    return {
        "no_fallback": accuracy(np.ones(len(z), bool), right, oos),
        "old_default": accuracy(1 / (1 + np.exp(-z)) >= OLD_THRESHOLD, right, oos),
        "new_default": accuracy(conf >= 0.5, right, oos),
        "label_free": accuracy(conf >= label_free, right, oos),
        "best": best_accuracy(z, right, oos),
        "estimated_share": estimated,
        "label_free_threshold": label_free,
        "messages": int(len(z)),
    }


def evaluate(rows, split, right_map, in_map, default_share) -> List[dict]:
    out = []
    for r in rows:
        for share in MIXES:
            runs = [mix_metrics(*draw_mix(r, split, share, seed), right_map, in_map,
                                default_share) for seed in (SEEDS if share > 0 else (0,))]
            summary = {k: float(np.mean([x[k] for x in runs])) for k in runs[0]}
            summary.update({f"{k}_std": float(np.std([x[k] for x in runs])) for k in runs[0]})
            summary["share_error"] = float(np.mean([x["estimated_share"] - share for x in runs]))
            summary["abs_share_error_max"] = float(
                max(abs(x["estimated_share"] - share) for x in runs))
            out.append({"task": task_name(r), "share": share, "seeds": len(runs), **summary})
    return out


def task_name(r: dict) -> str:
    return f"{r['dataset']} {r['oos']} {r['shots']}"


def choose_default_share(valid: Dict[float, List[dict]]) -> Tuple[float, List[dict]]:
    """The share with the least mean loss against the best threshold over the 30-70 % valid
    mixes (real customer-service traffic is 36-69 % out of scope); the in-scope accuracy it
    costs on a 0 % mix is reported beside it."""
    table = []
    for share, rows in valid.items():
        loss = [r["best"] - r["new_default"] for r in rows if 0.3 <= r["share"] <= 0.7]
        drop = [r["no_fallback"] - r["new_default"] for r in rows if r["share"] == 0]
        table.append({"share": share, "mean_loss_30_70": float(np.mean(loss)),
                      "worst_loss_30_70": float(np.max(loss)),
                      "mean_drop_0": float(np.mean(drop)), "worst_drop_0": float(np.max(drop))})
    return min(table, key=lambda t: t["mean_loss_30_70"])["share"], table


def share_errors(rows: Sequence[dict], split: str, in_map: Tuple[float, float],
                 shares: Sequence[float] = (0.1, 0.3, 0.5, 0.7),
                 seeds: Sequence[int] = (0, 1, 2)) -> float:
    """Mean absolute error of the share estimate over the mixes of every task."""
    errors = [abs(estimate_share(in_scope_probability(draw_mix(r, split, s, seed)[0], in_map))
                  - s) for r in rows for s in shares for seed in seeds]
    return float(np.mean(errors))


def refine_in_scope_map(rows: Sequence[dict]) -> Tuple[Tuple[float, float], List[dict]]:
    """The in-scope map the share estimate uses: the (slope, intercept) with the least share
    error on the valid mixes. The logistic fit of an even mix pools corpora whose in-scope
    and out-of-scope logits overlap very differently; per corpus it is too flat, and EM on
    too flat posteriors counts part of the in-scope mass as out of scope."""
    grid = [(float(a), float(b)) for a in np.linspace(0.5, 5.0, 10)
            for b in np.linspace(-7.0, 1.0, 17)]
    table = [{"map": m, "valid_share_error": share_errors(rows, "valid", m)} for m in grid]
    return min(table, key=lambda t: t["valid_share_error"])["map"], table


def analyse(output: Path, raw_dir: Path = RAW_DIR, fit_datasets: Sequence[str] = ()) -> None:
    """``fit_datasets``: the corpora whose valid splits choose the maps and the default share
    (default: all); every corpus's test mixes are measured."""
    rows = [json.loads(p.read_text()) for p in sorted(raw_dir.glob("*.json"))]
    if not rows:
        raise SystemExit(f"no raw scores in {raw_dir}: run the fit step first")
    chosen_on = [r for r in rows if not fit_datasets or r["dataset"] in fit_datasets]
    z, right, inside, w = even_mix_data(chosen_on, "valid")
    right_map = fit_logistic(z, right, w)
    in_map_even = fit_logistic(z, inside, w)
    in_map, in_map_grid = refine_in_scope_map(chosen_on)
    valid = {s: evaluate(chosen_on, "valid", right_map, in_map, s) for s in SHARE_GRID}
    default_share, choice = choose_default_share(valid)
    result = {
        "command": "python scripts/traffic_share.py " + " ".join(sys.argv[1:]),
        "tasks": [{k: r[k] for k in ("dataset", "oos", "shots", "seed", "encoder", "intents",
                                     "train_examples", "fit_seconds", "command")}
                  for r in rows],
        "maps": {"right": right_map, "in_scope": in_map,
                 "in_scope_even_mix_fit": in_map_even,
                 "fitted_on": "valid: right by logistic regression on even mixes, in scope "
                              "by the least share error on the 10-70 % mixes",
                 "in_scope_valid_share_error": {
                     "even_mix_fit": share_errors(chosen_on, "valid", in_map_even),
                     "chosen": share_errors(chosen_on, "valid", in_map)},
                 "chosen_on_datasets": sorted({r["dataset"] for r in chosen_on}),
                 "in_scope_grid": in_map_grid},
        "default_share": default_share, "default_share_choice": choice,
        "valid": evaluate(rows, "valid", right_map, in_map, default_share),
        "test": evaluate(rows, "test", right_map, in_map, default_share),
        "accuracy_without_fallback": {task_name(r): float(np.mean(r["test"]["right"]))
                                      for r in rows},
    }
    output.write_text(json.dumps(result, indent=1) + "\n")
    output.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = [
        f"Maps chosen on valid: right {fmt_map(result['maps']['right'])} (even mixes), "
        f"in scope {fmt_map(result['maps']['in_scope'])} (least share error; the even-mix "
        f"fit {fmt_map(result['maps']['in_scope_even_mix_fit'])}); default share "
        f"{result['default_share']:.2f}; both chosen on the valid mixes of "
        f"{', '.join(result['maps']['chosen_on_datasets'])}. Command: `{result['command']}`.",
        "",
        "## Test mixes: overall accuracy (%), mean ± std over 5 draws",
        "",
        "| task | OOS % | no fallback | old default (0.4) | new default (0.5) | label-free "
        "| best on test | label-free − best | estimated OOS % | share error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["test"]:
        lines.append(
            f"| {r['task']} | {100 * r['share']:.0f} | {100 * r['no_fallback']:.1f} "
            f"| {100 * r['old_default']:.1f} | {100 * r['new_default']:.1f} "
            f"| {100 * r['label_free']:.1f} ± {100 * r['label_free_std']:.1f} "
            f"| {100 * r['best']:.1f} | {100 * (r['label_free'] - r['best']):+.1f} "
            f"| {100 * r['estimated_share']:.1f} ± {100 * r['estimated_share_std']:.1f} "
            f"| {100 * r['share_error']:+.1f} |")
    lines += ["", "## Per mix over tasks (test)", "",
              "| OOS % | old default − best | new default − best | label-free − best "
              "| worst label-free − best | mean abs share error | worst abs share error |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for share in MIXES:
        rs = [r for r in result["test"] if r["share"] == share]
        lines.append(
            f"| {100 * share:.0f} | {mean_diff(rs, 'old_default'):+.1f} "
            f"| {mean_diff(rs, 'new_default'):+.1f} | {mean_diff(rs, 'label_free'):+.1f} "
            f"| {100 * min(r['label_free'] - r['best'] for r in rs):+.1f} "
            f"| {100 * np.mean([abs(r['share_error']) for r in rs]):.1f} "
            f"| {100 * max(r['abs_share_error_max'] for r in rs):.1f} |")
    lines += ["", "## Default share, chosen on valid", "",
              "| share | mean loss vs best, 30-70 % | worst | mean in-scope drop at 0 % | worst |",
              "|---:|---:|---:|---:|---:|"]
    for t in result["default_share_choice"]:
        lines.append(f"| {t['share']:.2f} | {100 * t['mean_loss_30_70']:.1f} "
                     f"| {100 * t['worst_loss_30_70']:.1f} | {100 * t['mean_drop_0']:.1f} "
                     f"| {100 * t['worst_drop_0']:.1f} |")
    return "\n".join(lines) + "\n"


def mean_diff(rows: List[dict], key: str) -> float:
    return 100 * float(np.mean([r[key] - r["best"] for r in rows]))


def fmt_map(m: Sequence[float]) -> str:
    return f"sigmoid({m[0]:.3f} z {m[1]:+.3f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--encoder", required=True, help="DATASET=ENCODER_DIR")
    f.add_argument("--dataset", required=True)
    f.add_argument("--shots", nargs="+", default=["10", "full"])
    f.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("analyse")
    a.add_argument("--output", default="docs/results/traffic_share/traffic_share.json")
    a.add_argument("--fit-datasets", nargs="*", default=[],
                   help="Corpora whose valid mixes choose the maps and the default share.")
    for step in (f, a):
        step.add_argument("--raw-dir", default=str(RAW_DIR))
    ns = p.parse_args()
    if ns.step == "fit":
        dataset, _, encoder = ns.encoder.partition("=")
        assert dataset == ns.dataset, "--encoder must name the dataset it is evaluated on"
        fit_and_score(ns.dataset, encoder, ns.shots, ns.seed, Path(ns.raw_dir))
    else:
        analyse(Path(ns.output), Path(ns.raw_dir), ns.fit_datasets)


if __name__ == "__main__":
    main()

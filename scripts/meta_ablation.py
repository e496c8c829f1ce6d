"""Ablation of meta-training objectives, one leave-one-dataset-out fold.

Every variant runs on the same corpora, seed, class split and fixed meta-valid episodes. Two
validation scores per evaluation: the held-out corpus's ``valid`` split (few-shot, full label
set: what a new bot looks like; it picks each run's best step) and meta-valid (held-out
intents of the training corpora). Results are written after each run.

Usage:
    python scripts/meta_ablation.py --exclude BANKING77 --valid-corpus BANKING77 \\
        --episodes 240 --eval-every 40 \\
        --out docs/results/meta_training/meta_training_ablation.json [--only proto-10way-all ...]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List

from rasa_meta.training.meta_train import MetaTrainingArguments, meta_train

# name -> overrides of MetaTrainingArguments (every run's step-0 evaluation is the base encoder)
VARIANTS: Dict[str, Dict] = {
    "prototypical 10-way, top 2 layers": {"objective": "prototypical", "train_layers": 2},
    "prototypical 10-way, all layers": {"objective": "prototypical"},
    "contrastive 10-way, all layers": {"objective": "contrastive"},
    "prototypical all-way (pooled), all layers": {
        "objective": "prototypical", "n_way": 0, "k_shot": 2, "q_query": 2, "domain_prob": 0.0
    },
    "prototypical 10-way, all layers + uniformity 0.2": {
        "objective": "prototypical", "uniformity_weight": 0.2
    },
    "both 10-way, all layers": {"objective": "both"},
    "prototypical 10-way, all 6 blocks (token embeddings frozen)": {
        "objective": "prototypical", "train_layers": 6
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exclude", nargs="*", default=["BANKING77"])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--valid-episodes", type=int, default=12)
    ap.add_argument("--valid-corpus", default="BANKING77",
                    help="Held-out corpus whose valid split picks each run's best step.")
    ap.add_argument("--learning-rate", type=float, default=3e-5)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--runs", default="runs/ablation")
    ap.add_argument("--out", default="docs/results/meta_training/meta_training_ablation.json")
    ap.add_argument("--plot", default="docs/results/meta_training/meta_training_ablation.png")
    ap.add_argument("--plot-only", action="store_true")
    ns = ap.parse_args()
    out = Path(ns.out)
    rows: List[Dict] = json.loads(out.read_text())["rows"] if out.is_file() else []
    if ns.plot_only:
        plot(rows, Path(ns.plot))
        return
    done = {r["variant"] for r in rows}
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        if (ns.only and name not in ns.only) or name in done:
            continue
        args = MetaTrainingArguments(
            output_dir=f"{ns.runs}/{i}", exclude=ns.exclude, episodes=ns.episodes,
            eval_every=ns.eval_every, valid_episodes=ns.valid_episodes,
            learning_rate=ns.learning_rate, patience=100, seed=0, device="cpu",
            valid_corpus=ns.valid_corpus,
        )
        for key, value in overrides.items():
            setattr(args, key, value)
        start = time.perf_counter()
        result = meta_train(args)
        best = next(h for h in result.history if h["step"] == result.best_step)
        rows.append({
            "variant": name,
            "corpus_valid_accuracy": best.get("corpus_valid_accuracy"),
            "meta_valid_accuracy": best["valid_accuracy"],
            "best_step": result.best_step,
            "steps": result.steps,
            "seconds": round(time.perf_counter() - start, 1),
            "history": result.history,
            "arguments": asdict(args),
        })
        print(json.dumps({k: rows[-1][k] for k in ("variant", "corpus_valid_accuracy",
                                                   "meta_valid_accuracy", "best_step",
                                                   "seconds")}), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "command": "python scripts/meta_ablation.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in vars(ns).items() if v is not None and k != "only"),
            "protocol": f"{ns.exclude} left out of meta-training. corpus_valid_accuracy: "
                        f"nearest-prototype accuracy on {ns.valid_corpus}/valid with its "
                        "train_10 examples, full label set (picks each run's best step). "
                        "meta_valid_accuracy: 20% of each training corpus's intents held out "
                        f"(class-disjoint), {ns.valid_episodes} fixed all-intents-way 5-shot "
                        "episodes.",
            "rows": rows,
        }, indent=1))
        plot(rows, Path(ns.plot))


def plot(rows: List[Dict], path: Path) -> None:
    """Validation accuracy against meta-training steps, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in rows:
        steps = [h["step"] for h in row["history"]]
        for ax, key in zip(axes, ("corpus_valid_accuracy", "valid_accuracy")):
            values = [100 * h.get(key, float("nan")) for h in row["history"]]
            ax.plot(steps, values, marker="o", markersize=3, label=row["variant"])
    axes[0].set_title("held-out corpus, valid split (picks the step)")
    axes[1].set_title("meta-valid: held-out intents of the training corpora")
    for ax in axes:
        ax.set_xlabel("meta-training episodes")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

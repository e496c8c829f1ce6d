"""Post-inner-loop accuracy of meta-trained encoders, for the meta-algorithm ablation.

For each encoder: the fixed meta-valid episodes of its fold (held-out intents of the training
corpora, all-intents-way 5-shot, the episodes meta-train scores) before and after the inner
loop `rasa train` runs on each episode's support; and the left-out corpus's valid split as a
bot gets it (`train_5` examples, the component's inner loop and refined head, full label set).
Never a test split.

    python scripts/meta_algorithm_eval.py --exclude BANKING77 --valid-corpus BANKING77 \
        --encoder base=sentence-transformers/all-MiniLM-L6-v2 \
        --encoder episodic=runs/ablation/episodic --encoder fomaml=runs/ablation/fomaml \
        --output docs/results/meta_training/fomaml/post_inner_loop.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rasa_meta.runtime.encoder import SentenceEncoder
from rasa_meta.runtime.heads import encoder_temperature
from rasa_meta.tooling.evaluation import inner_loop_accuracy
from rasa_meta.training.corpus import data_root, load_split
from rasa_meta.training.meta_algorithms import InnerLoop, adapted_episode_accuracy
from rasa_meta.training.meta_train import (
    MetaTrainingArguments,
    episode_accuracy,
    load_meta_corpora,
    make_samplers,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exclude", nargs="*", default=["BANKING77"])
    p.add_argument("--valid-corpus", default="BANKING77")
    p.add_argument("--train-split", default="train_5")
    p.add_argument("--encoder", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--output", required=True)
    ns = p.parse_args()

    args = MetaTrainingArguments(exclude=ns.exclude, valid_episodes=12)
    _, episodes = make_samplers(args, load_meta_corpora(args))
    root = data_root() / ns.valid_corpus
    train, valid = load_split(root / ns.train_split), load_split(root / "valid")
    inner = InnerLoop()
    out = {"command": "python scripts/meta_algorithm_eval.py " + " ".join(
        f"--encoder {e}" for e in ns.encoder) + f" --exclude {' '.join(ns.exclude)} "
        f"--valid-corpus {ns.valid_corpus} --output {ns.output}",
        "meta_valid_episodes": f"{len(episodes)}x all-intents-way {args.k_shot}-shot "
        f"{args.q_query}-query, seed {args.seed}",
        "inner_loop": inner.__dict__, "encoders": {}}
    for spec in ns.encoder:
        name, path = spec.split("=", 1)
        start = time.perf_counter()
        encoder = SentenceEncoder.from_pretrained(path, max_length=args.max_length)
        scale = 1.0 / encoder_temperature(encoder.metadata)
        row = {
            "path": path,
            "meta_valid_prototype": episode_accuracy(encoder, episodes),
            "meta_valid_after_inner_loop": adapted_episode_accuracy(encoder, episodes, inner,
                                                                    scale),
        }
        bot = [inner_loop_accuracy(path, train, valid, 1, seed) for seed in ns.seeds]
        row[f"{ns.valid_corpus}_valid_{ns.train_split}_rasa_fit"] = sum(
            r["accuracy"] for r in bot) / len(bot)
        row["seconds"] = round(time.perf_counter() - start, 1)
        out["encoders"][name] = row
        print(name, json.dumps(row), flush=True)
        Path(ns.output).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.output).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

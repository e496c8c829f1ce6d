"""Few-shot accuracy table for the README: frozen base vs meta-trained, leave-one-dataset-out.

Usage:
    python scripts/few_shot_table.py --encoder BANKING77=runs/noB --encoder CLINC150=runs/noC \\
        [--split test] [--shots 5 10] [--encoder-epochs 2 --seeds 0 1 2] [--out table.json]

Each dataset is evaluated with the encoder named for it, which must not have seen that
dataset in meta-training (checked against the checkpoint's metadata).
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Dict, List

from rasa_meta.corpus import corpus_family, data_root, load_split
from rasa_meta.encoder import SentenceEncoder, read_metadata, resolve_encoder
from rasa_meta.evaluation import (
    accuracy,
    cached_encode,
    inner_loop_accuracy,
    logistic_regression_predict,
)
from rasa_meta.model import FewShotConfig, FewShotIntentModel


def head_accuracy(encoder, name, train, test_emb, test_labels, head_steps, cache) -> float:
    config = FewShotConfig(encoder=name, head_steps=head_steps, out_of_scope_detection=False)
    model = FewShotIntentModel(config, encoder).fit_embeddings(
        cached_encode(encoder, train.texts, cache), train.labels, train.texts
    )
    probs, _, _ = model.predict_embeddings(test_emb)
    return accuracy(test_labels, [model.labels[i] for i in probs.argmax(1).tolist()])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", action="append", required=True, help="DATASET=encoder")
    ap.add_argument("--base", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--shots", nargs="+", default=["5", "10"])
    ap.add_argument("--encoder-epochs", type=int, default=0)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--cache", default="runs/embeddings")
    ap.add_argument("--out", default=None)
    ns = ap.parse_args()
    root = data_root()
    rows: List[Dict] = []
    for spec in ns.encoder:
        dataset, name = spec.split("=", 1)
        meta = read_metadata(resolve_encoder(name))
        seen = {corpus_family(c) for c in meta.get("corpora", [])}
        assert corpus_family(dataset) not in seen, f"{name} was meta-trained on {dataset}"
        test = load_split(root / dataset / ns.split)
        base = SentenceEncoder.from_pretrained(ns.base)
        meta_enc = SentenceEncoder.from_pretrained(name)
        base_test = cached_encode(base, test.texts, ns.cache)
        meta_test = cached_encode(meta_enc, test.texts, ns.cache)
        for shots in ns.shots:
            train = load_split(root / dataset / f"train_{shots}")
            row = {"dataset": dataset, "shots": shots, "split": ns.split, "encoder": name}
            row["base+centroid"] = head_accuracy(base, ns.base, train, base_test, test.labels,
                                                 0, ns.cache)
            row["base+logreg"] = accuracy(test.labels, logistic_regression_predict(
                cached_encode(base, train.texts, ns.cache), train.labels, base_test))
            row["meta+centroid"] = head_accuracy(meta_enc, name, train, meta_test, test.labels,
                                                 0, ns.cache)
            row["meta+inner(head)"] = head_accuracy(meta_enc, name, train, meta_test,
                                                    test.labels, 100, ns.cache)
            if ns.encoder_epochs:
                accs = [inner_loop_accuracy(name, train, test, ns.encoder_epochs, seed)["accuracy"]
                        for seed in ns.seeds]
                row["meta+inner(encoder)"] = statistics.mean(accs)
                row["meta+inner(encoder) std"] = statistics.pstdev(accs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if ns.out:
        with open(ns.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

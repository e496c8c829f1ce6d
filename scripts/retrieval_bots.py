"""Retrieval-intent bots built from the shared corpora: rasa-meta (MetaIntentClassifier +
MetaResponseSelector) against Rasa's DIET + ResponseSelector, in the same run.

- ``CLINC150``: each of its 10 domains is one retrieval intent, its 15 intents the response
  keys (``banking/transfer``, ...): 150 keys, 10 retrieval intents.
- ``BANKING77``: one ``faq`` retrieval intent whose 67 response keys are BANKING77 intents,
  beside 10 of its intents kept as ordinary intents (every 7th in sorted order).
- a real assistant of ``RASA_BOTS`` (``financial-demo``, ``helpdesk-assistant``): K examples
  per intent for training, all its other examples for testing (intent accuracy only; the
  default encoder never saw these bots).

K examples per label from ``train`` (seeded), the whole ``test`` split; intent accuracy over
all test messages (a retrieval intent counts as right when its name is), response selection
over the test messages of retrieval intents (the predicted ``intent_response_key``). Each
corpus is scored with its leave-one-dataset-out encoder (``--encoder D=PATH``), never the
shipped default. Both pipelines are trained with ``rasa.model_training.train_nlu`` in this
process; seconds are its wall time.

    python scripts/retrieval_bots.py --encoder CLINC150=runs/scorer/CLINC150 \\
        --encoder BANKING77=runs/scorer/BANKING77
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

DIET_PIPELINE = [
    {"name": "WhitespaceTokenizer"},
    {"name": "CountVectorsFeaturizer"},
    {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
    {"name": "DIETClassifier", "epochs": 100, "constrain_similarities": True},
    {"name": "ResponseSelector", "epochs": 100, "constrain_similarities": True},
]


def meta_pipeline(encoder: str, head: str = "prototype") -> List[Dict]:
    return [{"name": "rasa_meta.MetaIntentClassifier", "encoder": encoder, "head": head},
            {"name": "rasa_meta.MetaResponseSelector"}]


def read_split(corpus: str, split: str) -> List[Tuple[str, str]]:
    folder = DATA / corpus / split
    texts = (folder / "seq.in").read_text(encoding="utf-8").splitlines()
    labels = (folder / "label").read_text(encoding="utf-8").splitlines()
    return list(zip(texts, labels))


def real_bot(name: str) -> List[Tuple[str, str]]:
    """(text, intent) of a real assistant's NLU data in RASA_BOTS (entity markup removed)."""
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(DATA / "RASA_BOTS" / name / "nlu.yml"))
    return [(m.get("text"), m.get("intent")) for m in data.intent_examples if m.get("text")]


def label_map(corpus: str) -> Dict[str, str]:
    """Corpus label -> the bot's label (``retrieval/key`` or an ordinary intent)."""
    labels = sorted({lab for _, lab in read_split(corpus, "train")})
    if corpus == "CLINC150":
        domains = json.loads((DATA / "CLINC150" / "domains.json").read_text())
        domain_of = {i: d for d, intents in domains.items() for i in intents}
        return {lab: f"{domain_of[lab]}/{lab}" for lab in labels}
    if corpus == "BANKING77":
        ordinary = set(labels[::7])
        return {lab: lab if lab in ordinary else f"faq/{lab}" for lab in labels}
    raise ValueError(corpus)


def sample(pairs: List[Tuple[str, str]], shots: int, seed: int) -> List[Tuple[str, str]]:
    by_label: Dict[str, List[str]] = defaultdict(list)
    for text, lab in pairs:
        by_label[lab].append(text)
    rng = random.Random(seed)
    return [(t, lab) for lab in sorted(by_label)
            for t in rng.sample(by_label[lab], min(shots, len(by_label[lab])))]


def write_bot(work: Path, train: List[Tuple[str, str]]) -> Tuple[Path, Path]:
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    examples = []
    for text, label in train:
        data = {"text": text, "intent": label.split("/")[0]}
        if "/" in label:
            data["intent_response_key"] = label
        examples.append(Message(data=data))
    nlu = work / "nlu.yml"
    nlu.write_text(TrainingData(training_examples=examples).nlu_as_yaml(), encoding="utf-8")
    keys = sorted({lab for _, lab in train if "/" in lab})
    intents = sorted({lab.split("/")[0] for _, lab in train})
    domain = {"version": "3.1", "intents": intents,
              "responses": {f"utter_{k}": [{"text": k}] for k in keys}}
    (work / "domain.yml").write_text(yaml.safe_dump(domain), encoding="utf-8")
    return nlu, work / "domain.yml"


def run_one(pipeline: List[Dict], train: List[Tuple[str, str]],
            test: List[Tuple[str, str]], work: Path) -> Dict[str, float]:
    from rasa.model_training import train_nlu

    from rasa_meta.tooling.rasa_agent import load_agent

    work.mkdir(parents=True)
    nlu, domain = write_bot(work, train)
    config = {"recipe": "default.v1", "language": "en", "assistant_id": "retrieval-bots",
              "pipeline": pipeline, "policies": []}
    (work / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    model = train_nlu(str(work / "config.yml"), str(nlu), str(work / "models"),
                      fixed_model_name="nlu", domain=str(domain))
    seconds = time.perf_counter() - start
    agent = load_agent(model)

    async def parse_all() -> List[Dict]:
        return [await agent.parse_message(t) for t, _ in test]

    right_intent = right_key = n_keys = 0
    for (_, gold), parsed in zip(test, asyncio.run(parse_all())):
        right_intent += (parsed.get("intent") or {}).get("name") == gold.split("/")[0]
        if "/" in gold:
            n_keys += 1
            selector = (parsed.get("response_selector") or {}).get("default") or {}
            key = (selector.get("response") or {}).get("intent_response_key")
            right_key += key == gold
    return {"intent_accuracy": right_intent / len(test),
            "response_accuracy": right_key / n_keys if n_keys else None,
            "rasa_train_nlu_seconds": round(seconds, 1), "n_train": len(train),
            "n_test": len(test)}


def markdown(rows: List[Dict]) -> str:
    """The results as a table: per bot and shots, both methods side by side."""
    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}"

    out = ["| bot | examples per key | rasa-meta intent / response | DIET + RS intent / "
           "response | RS errors removed | `rasa train nlu` s (meta / DIET) |",
           "|---|---:|---|---|---:|---|"]
    cells: Dict[Tuple[str, int], Dict[str, Dict]] = defaultdict(dict)
    for row in rows:
        cells[(row["corpus"], row["shots"])][row["method"]] = row
    for (corpus, shots), by_method in cells.items():
        meta, diet = by_method.get("rasa_meta"), by_method.get("diet+response_selector")
        removed = "–"
        if meta and diet and meta["response_accuracy"] is not None:
            gain = meta["response_accuracy"] - diet["response_accuracy"]
            removed = f"{100 * gain / (1 - diet['response_accuracy']):.0f} %"
        out.append(
            f"| {corpus} | {shots} | {pct(meta and meta['intent_accuracy'])} / "
            f"{pct(meta and meta['response_accuracy'])} | "
            f"{pct(diet and diet['intent_accuracy'])} / {pct(diet and diet['response_accuracy'])} "
            f"| {removed} | {meta['rasa_train_nlu_seconds'] if meta else '–'} / "
            f"{diet['rasa_train_nlu_seconds'] if diet else '–'} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpora", nargs="+", default=["CLINC150", "BANKING77"])
    p.add_argument("--encoder", action="append", default=[], help="CORPUS=PATH")
    p.add_argument("--shots", nargs="+", type=int, default=[1, 3, 5, 10])
    p.add_argument("--diet-shots", nargs="+", type=int, default=[3, 10])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="docs/results/retrieval/retrieval_bots.json")
    p.add_argument("--markdown", metavar="JSON", help="print the table of a finished run")
    ns = p.parse_args()
    if ns.markdown:
        print(markdown(json.loads(Path(ns.markdown).read_text())["rows"]))
        return 0
    encoders = dict(spec.split("=", 1) for spec in ns.encoder)
    out = Path(ns.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: List[Dict] = []

    def save() -> None:  # after every row: a long run keeps what it measured
        record = {"command": "python " + " ".join(sys.argv), "cpu_cores": os.cpu_count(),
                  "rows": rows}
        out.write_text(json.dumps(record, indent=1) + "\n")
    for corpus in ns.corpora:
        if (DATA / "RASA_BOTS" / corpus).is_dir():  # a real bot: K per intent, the rest tests
            pairs = real_bot(corpus)
            for shots in ns.shots:
                train = sample(pairs, shots, ns.seed)
                taken = set(train)
                test = [pair for pair in pairs if pair not in taken]
                encoder = encoders.get(corpus, "default")  # no corpus of it in meta-training
                for method, pipeline in [("rasa_meta", meta_pipeline(encoder)),
                                         ("rasa_meta[matching]",
                                          meta_pipeline(encoder, "matching")),
                                         ("diet+response_selector", DIET_PIPELINE)]:
                    with tempfile.TemporaryDirectory() as tmp:
                        row = {"corpus": corpus, "shots": shots, "seed": ns.seed,
                               "method": method,
                               "encoder": encoder if method.startswith("rasa_meta") else None,
                               **run_one(pipeline, train, test, Path(tmp) / "bot")}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    save()
            continue
        if corpus not in encoders:
            print(f"retrieval_bots: no --encoder {corpus}=PATH (a leave-one-out encoder)",
                  file=sys.stderr)
            return 2
        mapping = label_map(corpus)
        test = [(t, mapping[lab]) for t, lab in read_split(corpus, "test")]
        for shots in ns.shots:
            train = [(t, mapping[lab]) for t, lab in sample(read_split(corpus, "train"), shots,
                                                            ns.seed)]
            methods = [("rasa_meta", meta_pipeline(encoders[corpus]))]
            if shots in ns.diet_shots:
                methods.append(("diet+response_selector", DIET_PIPELINE))
            for method, pipeline in methods:
                with tempfile.TemporaryDirectory() as tmp:
                    row = {"corpus": corpus, "shots": shots, "seed": ns.seed, "method": method,
                           "encoder": encoders[corpus] if method.startswith("rasa_meta")
                           else None,
                           **run_one(pipeline, train, test, Path(tmp) / "bot")}
                print(json.dumps(row), flush=True)
                rows.append(row)
                save()
    return 0


if __name__ == "__main__":
    sys.exit(main())

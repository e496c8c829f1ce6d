"""Which pipeline extracts entities beside MetaIntentClassifier, and at what training cost.

For each real Rasa assistant in ``RASA_BOTS`` (its examples split 80/20 per intent with Rasa's
own stratified ``train_test_split``, seed 0), every pipeline below is trained with
``rasa train nlu`` (wall time of the command, as a user sees it) and parsed on the held-out
20 %: entity precision / recall / F1 (exact span and type, after synonym mapping) and intent
accuracy. ``rasa_default`` is the pipeline ``rasa init`` writes (DIET for intents and entities,
a ResponseSelector, FallbackClassifier), the baseline the others are timed against.

    python scripts/entity_recipes.py --output docs/results/entities/entity_recipes.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Set, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]
META = {"name": "rasa_meta.MetaIntentClassifier"}
TOKENIZER = {"name": "WhitespaceTokenizer"}
SYNONYMS = {"name": "EntitySynonymMapper"}

PIPELINES: Dict[str, List[Dict]] = {
    "rasa_default": [
        TOKENIZER, {"name": "RegexFeaturizer"}, {"name": "LexicalSyntacticFeaturizer"},
        {"name": "CountVectorsFeaturizer"},
        {"name": "CountVectorsFeaturizer", "analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
        {"name": "DIETClassifier", "epochs": 100, "constrain_similarities": True},
        SYNONYMS, {"name": "ResponseSelector", "epochs": 100, "constrain_similarities": True},
        {"name": "FallbackClassifier", "threshold": 0.3, "ambiguity_threshold": 0.1},
    ],
    "meta + CRF, no featurizer": [TOKENIZER, {"name": "CRFEntityExtractor"}, SYNONYMS, META],
    "meta + LexicalSyntactic + CRF": [
        TOKENIZER, {"name": "LexicalSyntacticFeaturizer"}, {"name": "CRFEntityExtractor"},
        SYNONYMS, META,
    ],
    "meta + CountVectors + CRF": [
        TOKENIZER, {"name": "CountVectorsFeaturizer"}, {"name": "CRFEntityExtractor"}, SYNONYMS,
        META,
    ],
    "meta + RegexEntityExtractor": [
        TOKENIZER, {"name": "RegexEntityExtractor", "use_lookup_tables": True,
                    "use_regexes": True}, SYNONYMS, META,
    ],
    "meta + DIET entities only": [
        TOKENIZER, {"name": "CountVectorsFeaturizer"},
        {"name": "DIETClassifier", "epochs": 100, "intent_classification": False,
         "entity_recognition": True}, SYNONYMS, META,
    ],
}


def split_bot(nlu_file: Path, out: Path, seed: int = 0) -> Tuple[Path, List[Dict]]:
    """Write the 80 % training part as Rasa YAML; the held-out 20 % as dicts."""
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLWriter
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(nlu_file))
    train, test = data.train_test_split(train_frac=0.8, random_seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    train_file = out / "nlu.yml"
    RasaYAMLWriter().dump(str(train_file), train)
    held = [{"text": m.get("text"), "intent": m.get("intent"),
             "entities": [(e["start"], e["end"], e["entity"]) for e in m.get("entities") or []]}
            for m in test.intent_examples if m.get("text")]
    return train_file, held


def train(pipeline: List[Dict], train_file: Path, work: Path) -> float:
    config = {"recipe": "default.v1", "language": "en", "assistant_id": "entity-recipes",
              "pipeline": pipeline, "policies": []}
    (work / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false",
           "RASA_CACHE_DIRECTORY": str(work / ".cache")}
    start = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rasa"), "train", "nlu", "--config", "config.yml",
         "--nlu", str(train_file), "--out", "models", "--fixed-model-name", "nlu"],
        cwd=work, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    return seconds


def evaluate(model: Path, held: List[Dict]) -> Dict[str, float]:
    from rasa_meta.tooling.rasa_agent import load_agent

    agent = load_agent(str(model))
    gold: Set[Tuple] = set()
    found: Set[Tuple] = set()
    right = 0

    async def parse_all() -> List[Dict]:
        return [await agent.parse_message(m["text"]) for m in held]

    for i, (m, parsed) in enumerate(zip(held, asyncio.run(parse_all()))):
        gold |= {(i, *e) for e in m["entities"]}
        found |= {(i, e["start"], e["end"], e["entity"]) for e in parsed.get("entities") or []}
        right += (parsed.get("intent") or {}).get("name") == m["intent"]
    tp = len(gold & found)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1,
            "gold_entities": len(gold), "intent_accuracy": right / len(held)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bots", nargs="+", default=["financial-demo", "helpdesk-assistant"])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "RASA_BOTS"))
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES))
    p.add_argument("--output", default="docs/results/entities/entity_recipes.json")
    ns = p.parse_args()
    rows = []
    for bot in ns.bots:
        with tempfile.TemporaryDirectory() as tmp:
            train_file, held = split_bot(Path(ns.data) / bot / "nlu.yml", Path(tmp) / "data")
            for name in ns.pipelines:
                work = Path(tmp) / name.replace(" ", "_").replace("+", "")
                work.mkdir()
                seconds = train(PIPELINES[name], train_file, work)
                row = {"bot": bot, "pipeline": name, "config": PIPELINES[name],
                       "rasa_train_nlu_seconds": round(seconds, 1), "held_out": len(held),
                       **evaluate(work / "models" / "nlu.tar.gz", held)}
                print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
                rows.append(row)
    out = Path(ns.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + " ".join(sys.argv), "cpu_cores": os.cpu_count(),
              "rows": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

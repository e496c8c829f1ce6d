"""The train/test pairs every method is run on."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Union

from rasa_meta.training.corpus import (
    IntentCorpus,
    data_root,
    load_rasa_nlu,
    load_split,
    sample_shots,
)

KNOWN_DATASETS = ("BANKING77", "CLINC150")
SHOTS = ("5", "10", "full")
FIXED_SPLITS = {"5": "train_5", "10": "train_10", "full": "train"}


@dataclass
class Split:
    """One train/test pair every method is run on."""

    dataset: str
    shots: str
    seed: int | None
    train_split: str  # how the training examples were chosen
    train: IntentCorpus
    test: IntentCorpus


def _restrict(
    train: IntentCorpus, test: IntentCorpus, intents: Sequence[str] | None,
    max_test: int | None, seed: int = 0,
) -> tuple:
    if intents is not None:
        train, test = train.subset(intents), test.subset(intents)
    if max_test is not None and len(test) > max_test:
        keep = sorted(random.Random(seed).sample(range(len(test)), max_test))
        test = IntentCorpus(
            test.name, [test.texts[i] for i in keep], [test.labels[i] for i in keep], test.domains
        )
    return train, test


def build_splits(
    datasets: Sequence[str],
    shots: Sequence[str],
    seeds: Sequence[int] | None = None,
    root: Path | None = None,
    nlu_train: Union[str, Path] | None = None,
    nlu_test: Union[str, Path] | None = None,
    max_intents: int | None = None,
    max_test: int | None = None,
) -> List[Split]:
    """Train/test pairs for each dataset, shot count and seed.

    BANKING77/CLINC150 use the fixed ``train_5``/``train_10`` splits unless ``seeds`` is given,
    in which case k shots per intent are drawn from ``train`` with ``sample_shots`` for each
    seed. ``full`` is the whole ``train`` split and runs once (it does not depend on a seed).
    A Rasa NLU YAML dataset has no fixed k-shot splits: k shots are always sampled from its
    train file (seed 0 when no seeds are given).
    """
    root = Path(root) if root else data_root()
    sources: List[tuple] = []
    for name in datasets:
        if name not in KNOWN_DATASETS:
            raise ValueError(f"Unknown dataset '{name}': use {list(KNOWN_DATASETS)} or "
                             f"--nlu-train/--nlu-test for a Rasa NLU YAML dataset.")
        sources.append((name, None, load_split(root / name / "test", name=f"{name}/test")))
    if nlu_train or nlu_test:
        if not (nlu_train and nlu_test):
            raise ValueError("A Rasa NLU YAML dataset needs both --nlu-train and --nlu-test.")
        full = load_rasa_nlu(nlu_train)
        sources.append((Path(nlu_train).stem, full, load_rasa_nlu(nlu_test)))
    splits: List[Split] = []
    for name, yaml_train, test in sources:
        full_train = yaml_train or load_split(root / name / "train", name=f"{name}/train")
        intents = None
        if max_intents is not None and max_intents < len(full_train.intents):
            intents = sorted(random.Random(0).sample(full_train.intents, max_intents))
        for k in shots:
            if k not in SHOTS:
                raise ValueError(f"Shots must be among {list(SHOTS)}, got '{k}'.")
            if k == "full":
                runs = [(None, "train" if yaml_train is None else Path(nlu_train).name, full_train)]
            elif seeds is None and yaml_train is None:
                runs = [(None, FIXED_SPLITS[k],
                         load_split(root / name / FIXED_SPLITS[k], name=f"{name}/{k}"))]
            else:
                runs = [(s, f"sample_shots(train, {k}, seed={s})",
                         sample_shots(full_train, int(k), s)) for s in (seeds or [0])]
            for seed, how, train in runs:
                train, small_test = _restrict(train, test, intents, max_test)
                splits.append(Split(name, k, seed, how, train, small_test))
    return splits

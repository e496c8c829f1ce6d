"""Labelled intent corpora: `seq.in`/`label` split folders and Rasa NLU YAML files."""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import yaml

from rasa_meta.runtime.errors import InvalidOptionError


@dataclass(frozen=True)
class CorpusInfo:
    """A corpus the registry knows: its meta-training split and its dataset family.

    Leaving a dataset out of meta-training leaves out its whole family (BANKING77-OOS
    re-splits BANKING77) and the domains of other corpora that cover the same ground
    (``related_domains``: CLINC150's banking and credit-card intents for BANKING77).
    """

    name: str
    folder: str
    family: str
    few_shot_splits: bool = False  # ships the DialoGLUE train_5 / train_10 splits
    related_domains: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    licence: str = ""

    @property
    def train_split(self) -> str:
        return f"{self.folder}/train"


CORPORA: Dict[str, CorpusInfo] = {
    info.name: info
    for info in (
        CorpusInfo("BANKING77", "BANKING77", "BANKING77", True,
                   {"CLINC150": ("banking", "credit_cards")}, "CC BY 4.0"),
        CorpusInfo("CLINC150", "CLINC150", "CLINC150", True, licence="CC BY 3.0"),
        CorpusInfo("BANKING77-OOS", "BANKING77-OOS", "BANKING77", licence="CC BY 4.0"),
        CorpusInfo("SNIPS", "SNIPS", "SNIPS", licence="CC0 1.0"),
        CorpusInfo("SGD", "SGD", "SGD", licence="CC BY-SA 4.0"),
        CorpusInfo("TOP", "TOP", "TOP", licence="Apache-2.0"),
        CorpusInfo("MULTIDOGO", "MULTIDOGO", "MULTIDOGO", licence="CDLA-Permissive-1.0"),
        CorpusInfo("BITEXT", "BITEXT", "BITEXT", licence="CDLA-Sharing-1.0"),
        CorpusInfo("DSTC11", "DSTC11", "DSTC11", licence="CDLA-Permissive-2.0"),
    )
}
# What meta-training reads by default: every distinct corpus once (BANKING77-OOS repeats
# BANKING77's texts).
META_TRAINING_CORPORA = [
    "BANKING77", "CLINC150", "SNIPS", "SGD", "TOP", "MULTIDOGO", "BITEXT", "DSTC11"
]
# An entity annotation in a Rasa NLU example, as Rasa's reader finds them
# (rasa.shared.nlu.training_data.entities_parser.ENTITY_REGEX, without importing Rasa):
# ``[text](entity)``, ``[text](entity:value)``, ``[text]{"entity": ...}``, ``[text][{...}]``.
# The one pattern for every tool that reads or writes examples (``rasa_meta.tooling.nlu_text``).
ENTITY_ANNOTATION = re.compile(
    r"\[(?P<text>[^\]]+?)\](?P<annotation>\([^:)]+?(?::[^)]+)?\)|\{[^}]+?\}|\[.*?\])"
)


@dataclass
class IntentCorpus:
    """Texts with intent labels, and optionally each intent's domain."""

    name: str
    texts: List[str]
    labels: List[str]
    domains: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(
                f"Corpus '{self.name}': {len(self.texts)} texts but {len(self.labels)} labels."
            )

    @property
    def intents(self) -> List[str]:
        return sorted(set(self.labels))

    def by_intent(self) -> Dict[str, List[str]]:
        groups: Dict[str, List[str]] = {}
        for text, label in zip(self.texts, self.labels):
            groups.setdefault(label, []).append(text)
        return groups

    def subset(self, intents: Sequence[str], name: Optional[str] = None) -> IntentCorpus:
        keep = set(intents)
        pairs = [(t, lab) for t, lab in zip(self.texts, self.labels) if lab in keep]
        return IntentCorpus(
            name or self.name,
            [t for t, _ in pairs],
            [lab for _, lab in pairs],
            {k: v for k, v in self.domains.items() if k in keep},
        )

    def __len__(self) -> int:
        return len(self.texts)


def data_root() -> Path:
    """Where the benchmark corpora live: $RASA_META_DATA, else ../shared/data near the repo."""
    env = os.environ.get("RASA_META_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]  # the repository root
    for candidate in (here / "data", here.parent / "shared" / "data", Path.cwd() / "data"):
        if candidate.is_dir():
            return candidate
    return here.parent / "shared" / "data"


def load_split(folder: Union[str, Path], name: Optional[str] = None) -> IntentCorpus:
    """Read a `seq.in` + `label` folder; domains from a `domains.json` beside or above it."""
    folder = Path(folder)
    texts = (folder / "seq.in").read_text(encoding="utf-8").splitlines()
    labels = (folder / "label").read_text(encoding="utf-8").splitlines()
    domains: Dict[str, str] = {}
    for candidate in (folder / "domains.json", folder.parent / "domains.json"):
        if candidate.is_file():
            for domain, intents in json.loads(candidate.read_text()).items():
                domains.update({i: domain for i in intents})
            break
    return IntentCorpus(name or f"{folder.parent.name}/{folder.name}", texts, labels, domains)


def load_rasa_nlu(paths: Union[str, Path, Sequence[Union[str, Path]]]) -> IntentCorpus:
    """Read intent examples from Rasa NLU YAML files (entity markup removed)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    texts: List[str] = []
    labels: List[str] = []
    for path in paths:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        for block in doc.get("nlu") or []:
            intent = block.get("intent")
            if not intent:
                continue
            examples = block.get("examples") or ""
            if isinstance(examples, str):
                lines = [ln.strip()[1:].strip() for ln in examples.splitlines()]
                lines = [ln for ln in lines if ln]
            else:  # the list-of-dicts form with metadata
                lines = [e.get("text", "") if isinstance(e, dict) else str(e) for e in examples]
            for line in lines:
                text = ENTITY_ANNOTATION.sub(r"\g<text>", line).strip()
                if text:
                    texts.append(text)
                    labels.append(str(intent))
    return IntentCorpus(Path(paths[0]).stem, texts, labels)


class UnknownCorpusError(InvalidOptionError):
    """A corpus name that is neither registered nor a path."""


def load_corpus(spec: str, root: Optional[Path] = None) -> IntentCorpus:
    """A corpus by registered name (``CLINC150``), split folder, or Rasa NLU YAML path."""
    root = root or data_root()
    info = registered(spec)
    if info is not None:
        folder = root / info.train_split
        if not folder.is_dir():
            raise UnknownCorpusError(
                f"Corpus '{info.name}' is registered but '{folder}' does not exist: point "
                f"RASA_META_DATA (or --data-root) at the folder that holds the corpora."
            )
        return load_split(folder, name=info.name)
    path = Path(spec)
    if path.suffix in {".yml", ".yaml"}:
        return load_rasa_nlu(path)
    if not path.exists() and (root / spec).exists():
        path = root / spec
    if not (path / "seq.in").is_file():
        raise UnknownCorpusError(
            f"Unknown corpus '{spec}': not a registered name ({', '.join(CORPORA)}), a split "
            f"folder with seq.in and label, or a Rasa NLU YAML file."
        )
    return load_split(path)


def registered(name: str) -> Optional[CorpusInfo]:
    """The registry entry for a corpus name (case-insensitive), or None."""
    return {k.upper(): v for k, v in CORPORA.items()}.get(name.upper())


def corpus_licences(names: Sequence[str]) -> Dict[str, str]:
    """Licence of each registered corpus among ``names`` (for a checkpoint's provenance)."""
    out = {}
    for name in names:
        info = registered(corpus_family(name) if registered(name) is None else name)
        if info is not None and info.licence:
            out[info.name] = info.licence
    return out


def corpus_family(name: str) -> str:
    """The dataset a corpus derives from (used for leave-one-dataset-out)."""
    head = name.split(":")[0].split("/")[0]
    info = registered(head)
    return info.family if info is not None else head


def leave_out(corpora: Sequence[IntentCorpus], excluded: Sequence[str]) -> List[IntentCorpus]:
    """The corpora with every excluded dataset's family removed, and the intents of other
    corpora's related domains (e.g. CLINC150 banking for BANKING77) removed too."""
    families = {corpus_family(e).upper() for e in excluded}
    drop_domains: Dict[str, set] = {}
    for e in excluded:
        info = registered(e)
        for corpus_name, domains in (info.related_domains if info else {}).items():
            drop_domains.setdefault(corpus_name.upper(), set()).update(domains)
    kept = []
    for corpus in corpora:
        if corpus_family(corpus.name).upper() in families:
            continue
        domains = drop_domains.get(corpus_family(corpus.name).upper())
        if domains:
            keep = [i for i in corpus.intents if corpus.domains.get(i) not in domains]
            if len(keep) < len(corpus.intents):
                dropped = sorted({corpus.domains[i] for i in corpus.intents if i not in keep})
                corpus = corpus.subset(keep, f"{corpus.name}:without-{'+'.join(dropped)}")
        kept.append(corpus)
    return kept


def sample_shots(corpus: IntentCorpus, shots: int, seed: int) -> IntentCorpus:
    """``shots`` examples per intent drawn with a seed (all of them where there are fewer)."""
    rng = random.Random(seed)
    texts: List[str] = []
    labels: List[str] = []
    for intent, examples in sorted(corpus.by_intent().items()):
        chosen = rng.sample(examples, min(shots, len(examples)))
        texts += chosen
        labels += [intent] * len(chosen)
    return IntentCorpus(f"{corpus.name}:{shots}-shot:seed{seed}", texts, labels, corpus.domains)


def few_shot_task(
    dataset: str, shots: str, seed: int = 0, root: Optional[Path] = None, test_split: str = "test"
) -> Tuple[IntentCorpus, IntentCorpus]:
    """The (train, test) pair of a few-shot evaluation on a registered corpus.

    Corpora with DialoGLUE splits use their fixed ``train_5`` / ``train_10`` (``seed`` is
    ignored; other shot counts are drawn as below); ``full`` is the whole ``train``. Others
    draw ``shots`` examples per intent from ``train`` with ``seed``; an intent with too few
    there is drawn from ``valid``, and an intent seen only in the test split (10 of SGD's)
    from the test split itself, those examples then leaving the test set, so the label set
    stays complete.
    """
    root = root or data_root()
    info = registered(dataset)
    folder = root / (info.folder if info else dataset)
    test = load_split(folder / test_split, name=f"{dataset}/{test_split}")
    if shots == "full":
        return load_split(folder / "train", name=f"{dataset}/train"), test
    if info is not None and info.few_shot_splits and (folder / f"train_{shots}").is_dir():
        return load_split(folder / f"train_{shots}", name=f"{dataset}/train_{shots}"), test
    k = int(shots)
    rng = random.Random(seed)
    pools = [load_split(folder / s).by_intent() for s in ("train", "valid")
             if s != test_split and (folder / s / "seq.in").is_file()]
    test_groups = test.by_intent()
    texts: List[str] = []
    labels: List[str] = []
    taken_from_test: set = set()
    for intent in sorted(set(test.labels) | set(pools[0])):
        pool = next((p[intent] for p in pools if len(p.get(intent, [])) >= k), None)
        from_test = pool is None
        if from_test:
            pool = test_groups[intent]
        chosen = rng.sample(sorted(pool), min(k, len(pool)))
        if from_test:
            taken_from_test.update((t, intent) for t in chosen)
        texts += chosen
        labels += [intent] * len(chosen)
    train = IntentCorpus(f"{dataset}/{k}-shot:seed{seed}", texts, labels, test.domains)
    if taken_from_test:
        kept = [(t, lab) for t, lab in zip(test.texts, test.labels)
                if (t, lab) not in taken_from_test]
        test = IntentCorpus(test.name, [t for t, _ in kept], [lab for _, lab in kept],
                            test.domains)
    return train, test

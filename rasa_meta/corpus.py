"""Labelled intent corpora: `seq.in`/`label` split folders and Rasa NLU YAML files."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import yaml

# Corpora found under the data root, and the family each belongs to: leaving a dataset out of
# meta-training leaves out its whole family (BANKING77-OOS re-splits BANKING77).
KNOWN_CORPORA = {
    "BANKING77": ("BANKING77/train", "BANKING77"),
    "CLINC150": ("CLINC150/train", "CLINC150"),
    "BANKING77-OOS": ("BANKING77-OOS/train", "BANKING77"),
}
_ENTITY = re.compile(r"\[([^\]]+)\](\([^)]*\)|\{[^}]*\})")


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
    here = Path(__file__).resolve().parent.parent
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
                text = _ENTITY.sub(r"\1", line).strip()
                if text:
                    texts.append(text)
                    labels.append(str(intent))
    return IntentCorpus(Path(paths[0]).stem, texts, labels)


def load_corpus(spec: str, root: Optional[Path] = None) -> IntentCorpus:
    """A corpus by known name (``CLINC150``), split folder, or Rasa NLU YAML path."""
    root = root or data_root()
    if spec in KNOWN_CORPORA:
        return load_split(root / KNOWN_CORPORA[spec][0], name=spec)
    path = Path(spec)
    if path.suffix in {".yml", ".yaml"}:
        return load_rasa_nlu(path)
    if not path.exists() and (root / spec).exists():
        path = root / spec
    return load_split(path)


def corpus_family(name: str) -> str:
    """The dataset a corpus derives from (used for leave-one-dataset-out)."""
    if name in KNOWN_CORPORA:
        return KNOWN_CORPORA[name][1]
    head = name.split("/")[0]
    return KNOWN_CORPORA.get(head, (None, head))[1]

"""Intent-overlap report: where a bot's training data confuses the few-shot classifier.

Everything works on unit-length sentence embeddings (the encoder's output), free of Rasa:

- **similar intents**: pairs of intents whose prototypes (normalised mean embeddings, the
  prototype head's view of an intent) are close in cosine similarity;
- **misplaced examples**: examples nearer to another intent's prototype than to their own,
  where the own prototype is rebuilt without the example (leave-one-out), so an example
  cannot vote for itself; intents with a single example are skipped here;
- **near-duplicates**: pairs of examples under different intents that are almost the same
  vector, or the same text once case, whitespace and surrounding punctuation are ignored;
- **too few examples**: intents with fewer examples than ``min_examples``.

``build_overlap_report`` makes an :class:`OverlapReport` (``to_dict``, and ``to_table`` /
``summary_lines`` from :mod:`~rasa_meta.tooling.overlap.text`); ``save_heatmap``
(:mod:`~rasa_meta.tooling.overlap.heatmap`) draws the prototype similarities as a PNG.
Prototypes and leave-one-out similarities are the runtime's own
(:func:`~rasa_meta.runtime.heads.class_means`,
:func:`~rasa_meta.runtime.in_scope.leave_one_out_similarities`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import PrototypeHead, class_means, label_index
from rasa_meta.runtime.in_scope import leave_one_out_similarities
from rasa_meta.tooling.nlu_text import normalise_text
from rasa_meta.tooling.overlap.text import report_table, summary_lines
from rasa_meta.training.arguments import arg

if TYPE_CHECKING:  # pragma: no cover
    from rasa_meta.runtime.encoder import SentenceEncoder

logger = logging.getLogger(__name__)

DEFAULT_SIMILARITY_THRESHOLD = 0.8
DEFAULT_DUPLICATE_THRESHOLD = 0.95
DEFAULT_MIN_EXAMPLES = 5
DEFAULT_TOP_PAIRS = 10
MAX_DUPLICATES = 500  # near-duplicate pairs kept in a report (most similar first)
_CHUNK = 1024  # rows of the example-by-example similarity matrix computed at once


@dataclass
class OverlapSettings:
    """What the report flags; ``rasa-meta check-data``'s flags are generated from these."""

    similarity_threshold: float = arg(
        DEFAULT_SIMILARITY_THRESHOLD,
        "Prototype cosine similarity from which two intents are flagged.", flag="--threshold",
        metavar="THRESHOLD",
    )
    duplicate_threshold: float = arg(
        DEFAULT_DUPLICATE_THRESHOLD,
        "Cosine similarity from which two examples count as near-duplicates.",
    )
    min_examples: int = arg(DEFAULT_MIN_EXAMPLES, "Intents with fewer examples are flagged.")
    top_pairs: int = arg(
        DEFAULT_TOP_PAIRS, "Most similar intent pairs listed even below the threshold."
    )


@dataclass
class IntentPair:
    """Two intents and the cosine similarity of their prototypes."""

    intent_a: str
    intent_b: str
    similarity: float
    above_threshold: bool
    misplaced: int = 0  # examples of one of the two nearer to the other's prototype

    def to_dict(self) -> Dict[str, Any]:
        return {
            "intent_a": self.intent_a,
            "intent_b": self.intent_b,
            "similarity": round(self.similarity, 4),
            "above_threshold": self.above_threshold,
            "misplaced_examples": self.misplaced,
        }


@dataclass
class MisplacedExample:
    """A training example closer to another intent than to (the rest of) its own."""

    text: str
    intent: str
    nearest_intent: str
    own_similarity: float  # to its own prototype rebuilt without it
    other_similarity: float  # to ``nearest_intent``'s prototype

    @property
    def margin(self) -> float:
        return self.other_similarity - self.own_similarity

    def to_dict(self) -> Dict[str, Any]:
        return {
            "text": self.text,
            "intent": self.intent,
            "nearest_intent": self.nearest_intent,
            "own_similarity": round(self.own_similarity, 4),
            "other_similarity": round(self.other_similarity, 4),
        }


@dataclass
class DuplicatePair:
    """Two examples under different intents that are (almost) the same."""

    text_a: str
    intent_a: str
    text_b: str
    intent_b: str
    similarity: float
    identical_text: bool

    def to_dict(self) -> Dict[str, Any]:
        return {
            "text_a": self.text_a,
            "intent_a": self.intent_a,
            "text_b": self.text_b,
            "intent_b": self.intent_b,
            "similarity": round(self.similarity, 4),
            "identical_text": self.identical_text,
        }


@dataclass
class OverlapReport:
    """Findings about a bot's intents; see the module docstring for what each list means."""

    intents: List[str]
    counts: Dict[str, int]
    similar_intents: List[IntentPair]
    misplaced_examples: List[MisplacedExample]
    duplicates: List[DuplicatePair]
    too_few_examples: Dict[str, int]
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD
    duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD
    min_examples: int = DEFAULT_MIN_EXAMPLES
    duplicates_total: int = 0  # before capping ``duplicates`` at MAX_DUPLICATES
    # intent -> examples made only of tokens the encoder does not know (left out at training)
    unreadable_examples: Dict[str, List[str]] = field(default_factory=dict)
    prototype_similarity: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)),
                                             repr=False)

    @property
    def n_examples(self) -> int:
        return int(sum(self.counts.values()))

    @property
    def close_pairs(self) -> List[IntentPair]:
        """Intent pairs at or above the similarity threshold."""
        return [p for p in self.similar_intents if p.above_threshold]

    @property
    def has_findings(self) -> bool:
        return bool(
            self.close_pairs or self.misplaced_examples or self.duplicates or self.too_few_examples
            or self.unreadable_examples
        )

    # --- output ------------------------------------------------------------------------

    def to_dict(self, include_matrix: bool = False) -> Dict[str, Any]:
        """JSON-ready dict; ``include_matrix`` adds the intent-by-intent similarity matrix."""
        out: Dict[str, Any] = {
            "n_examples": self.n_examples,
            "n_intents": len(self.intents),
            "settings": {
                "similarity_threshold": self.similarity_threshold,
                "duplicate_threshold": self.duplicate_threshold,
                "min_examples": self.min_examples,
            },
            "examples_per_intent": dict(self.counts),
            "similar_intents": [p.to_dict() for p in self.similar_intents],
            "misplaced_examples": [m.to_dict() for m in self.misplaced_examples],
            "duplicates": [d.to_dict() for d in self.duplicates],
            "duplicates_total": self.duplicates_total,
            "too_few_examples": dict(self.too_few_examples),
            "unreadable_examples": dict(self.unreadable_examples),
            "summary": self.summary_lines(),
        }
        if include_matrix:
            out["prototype_similarity"] = {
                "intents": list(self.intents),
                "matrix": np.round(self.prototype_similarity, 4).tolist(),
            }
        return out

    def summary_lines(self, max_items: int = 3) -> List[str]:
        """A few short warning lines, one per kind of finding; empty when all is well."""
        return summary_lines(self, max_items)

    def to_table(self, max_rows: int = 20) -> str:
        """The report as markdown tables (readable as plain text), longest lists truncated."""
        return report_table(self, max_rows)


# --- building the report -------------------------------------------------------------------


def build_overlap_report(
    texts: Sequence[str],
    labels: Sequence[str],
    embeddings: Optional[Union[torch.Tensor, np.ndarray]] = None,
    *,
    encoder: Optional[SentenceEncoder] = None,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    min_examples: int = DEFAULT_MIN_EXAMPLES,
    top_pairs: int = DEFAULT_TOP_PAIRS,
    batch_size: int = 64,
) -> OverlapReport:
    """Overlap report of labelled texts from their embeddings (or ``encoder`` makes them).

    ``similar_intents`` holds every pair at or above ``similarity_threshold`` plus the
    ``top_pairs`` most similar pairs, most similar first.
    """
    texts = [str(t) for t in texts]
    labels = [str(lab) for lab in labels]
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels.")
    settings = dict(
        similarity_threshold=float(similarity_threshold),
        duplicate_threshold=float(duplicate_threshold),
        min_examples=int(min_examples),
    )
    if not texts:
        return OverlapReport([], {}, [], [], [], {}, **settings)
    if embeddings is None:
        if encoder is None:
            raise ValueError("build_overlap_report needs embeddings or an encoder.")
        embeddings = encoder.encode(texts, batch_size=batch_size)
    emb = torch.as_tensor(embeddings).detach().cpu().double()
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(
            f"embeddings must have one row per text: {tuple(emb.shape)} for {len(texts)} texts."
        )
    names, targets = label_index(labels)
    n_classes = len(names)
    counts = torch.bincount(targets, minlength=n_classes)
    count_map = {name: int(c) for name, c in zip(names, counts.tolist())}
    too_few = {name: c for name, c in count_map.items() if c < min_examples}

    emb = F.normalize(emb, dim=-1)
    prototypes = class_means(emb, targets, n_classes)
    proto_sim = (prototypes @ prototypes.T).clamp(-1.0, 1.0)

    misplaced = _misplaced(texts, emb, targets, names, prototypes, counts)
    pairs = _similar_pairs(names, proto_sim, misplaced, similarity_threshold, top_pairs)
    duplicates, total = _duplicates(texts, emb, targets, names, duplicate_threshold)
    unreadable: Dict[str, List[str]] = {}
    if encoder is not None:  # what training leaves out (MetaIntentClassifier.train)
        for text, label, bad in zip(texts, labels, encoder.unreadable(texts)):
            if bad:
                unreadable.setdefault(label, []).append(text)
    return OverlapReport(
        intents=list(names),
        counts=count_map,
        similar_intents=pairs,
        misplaced_examples=misplaced,
        duplicates=duplicates,
        too_few_examples=too_few,
        duplicates_total=total,
        unreadable_examples=unreadable,
        prototype_similarity=proto_sim.float().numpy(),
        **settings,
    )


def _misplaced(
    texts: List[str],
    emb: torch.Tensor,
    targets: torch.Tensor,
    names: List[str],
    prototypes: torch.Tensor,
    counts: torch.Tensor,
) -> List[MisplacedExample]:
    n, n_classes = emb.shape[0], len(names)
    if n_classes < 2:
        return []
    # own intent without the example: the leave-one-out similarity in-scope scoring uses
    keep = counts[targets] >= 2
    head = PrototypeHead().fit(emb.float(), [names[t] for t in targets.tolist()])
    own = torch.full((n,), float("nan"), dtype=emb.dtype)
    own[keep] = leave_one_out_similarities(head).to(emb.dtype)
    to_protos = emb @ prototypes.T
    rows = torch.arange(n)
    to_protos[rows, targets] = -float("inf")
    other, nearest = to_protos.max(1)
    flagged = keep & (other > own)
    found = [
        MisplacedExample(texts[i], names[int(targets[i])], names[int(nearest[i])],
                         float(own[i]), float(other[i]))
        for i in flagged.nonzero().flatten().tolist()
    ]
    return sorted(found, key=lambda m: (-m.margin, m.intent, m.text))


def _similar_pairs(
    names: List[str],
    proto_sim: torch.Tensor,
    misplaced: List[MisplacedExample],
    threshold: float,
    top: int,
) -> List[IntentPair]:
    n = len(names)
    if n < 2:
        return []
    confusions: Dict[Tuple[str, str], int] = {}
    for m in misplaced:
        key = tuple(sorted((m.intent, m.nearest_intent)))
        confusions[key] = confusions.get(key, 0) + 1  # type: ignore[index]
    i, j = torch.triu_indices(n, n, offset=1)
    sims = proto_sim[i, j]
    order = sims.argsort(descending=True, stable=True).tolist()
    pairs = []
    for rank, k in enumerate(order):
        sim = float(sims[k])
        if rank >= top and sim < threshold:
            break
        a, b = names[int(i[k])], names[int(j[k])]
        pairs.append(IntentPair(a, b, sim, sim >= threshold, confusions.get((a, b), 0)))
    return pairs


def _duplicates(
    texts: List[str],
    emb: torch.Tensor,
    targets: torch.Tensor,
    names: List[str],
    threshold: float,
) -> Tuple[List[DuplicatePair], int]:
    n = emb.shape[0]
    found: Dict[Tuple[int, int], float] = {}
    cols = torch.arange(n)
    for start in range(0, n, _CHUNK):
        block = emb[start : start + _CHUNK] @ emb.T
        rows = cols[start : start + _CHUNK]
        mask = (
            (block >= threshold)
            & (targets[rows].unsqueeze(1) != targets.unsqueeze(0))
            & (cols.unsqueeze(0) > rows.unsqueeze(1))
        )
        for r, c in mask.nonzero().tolist():
            found[(start + r, c)] = float(block[r, c])
    groups: Dict[str, List[int]] = {}
    for idx, text in enumerate(texts):
        groups.setdefault(normalise_text(text), []).append(idx)
    same_text = set()
    for members in groups.values():
        for x, a in enumerate(members):
            for b in members[x + 1 :]:
                if targets[a] != targets[b]:
                    key = (min(a, b), max(a, b))
                    same_text.add(key)
                    found.setdefault(key, float(emb[a] @ emb[b]))
    ranked = sorted(found.items(), key=lambda kv: (kv[0] not in same_text, -kv[1], kv[0]))
    pairs = [
        DuplicatePair(texts[a], names[int(targets[a])], texts[b], names[int(targets[b])],
                      min(sim, 1.0), (a, b) in same_text)
        for (a, b), sim in ranked[:MAX_DUPLICATES]
    ]
    return pairs, len(found)


# --- at training time ----------------------------------------------------------------------


def training_warnings(model: Any) -> List[str]:
    """Summary lines for a fitted :class:`~rasa_meta.runtime.model.FewShotIntentModel`, from the
    embeddings its head already holds (nothing is re-encoded). Never raises: a diagnostic
    must not break training."""
    try:
        head = model.head
        if head is None or not len(head.labels):
            return []
        labels = [head.labels[t] for t in head.support_targets.tolist()]
        lines = build_overlap_report(model.texts, labels, head.support).summary_lines()
    except Exception as e:
        logger.debug("Intent-overlap check skipped: %s", e)
        return []
    if lines:
        config = getattr(model, "config", None)
        encoder = getattr(config, "encoder", "default")
        command = f"`rasa-meta check-data data/ --encoder {encoder}`"
        if getattr(config, "epochs", 0) > 0:
            lines.append(
                f"These come from the encoder as adapted to your examples; {command} measures "
                f"with it before adaptation, so its counts can differ. It gives the full "
                f"report and a heatmap."
            )
        else:
            lines.append(f"For the full report and a heatmap run: {command}")
    return lines

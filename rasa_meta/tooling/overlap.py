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

``build_overlap_report`` makes an :class:`OverlapReport` (``to_dict``, ``to_table``,
``summary_lines``); ``save_heatmap`` draws the prototype similarities as a PNG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from rasa_meta.runtime.heads import class_means, label_index

if TYPE_CHECKING:  # pragma: no cover
    from rasa_meta.runtime.encoder import SentenceEncoder

logger = logging.getLogger(__name__)

DEFAULT_SIMILARITY_THRESHOLD = 0.8
DEFAULT_DUPLICATE_THRESHOLD = 0.95
DEFAULT_MIN_EXAMPLES = 5
DEFAULT_TOP_PAIRS = 10
MAX_DUPLICATES = 500  # near-duplicate pairs kept in a report (most similar first)
_CHUNK = 1024  # rows of the example-by-example similarity matrix computed at once
_STRIP = " \t\n.!?,;:"


def normalise_text(text: str) -> str:
    """Text as compared for identical examples: case-folded, single spaces, no surrounding
    punctuation (``"Hi!"`` and ``"hi"`` are the same example)."""
    return " ".join(str(text).casefold().split()).strip(_STRIP)


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
        lines: List[str] = []
        close = self.close_pairs
        if close:
            shown = ", ".join(
                f"{p.intent_a} ~ {p.intent_b} ({p.similarity:.2f})" for p in close[:max_items]
            )
            lines.append(
                f"{_count(len(close), 'intent pair')} very similar (prototype cosine >= "
                f"{self.similarity_threshold:.2f}): {shown}{_more(len(close), max_items)}"
            )
        if self.misplaced_examples:
            shown = ", ".join(
                f"'{_clip(m.text, 40)}' ({m.intent} -> {m.nearest_intent})"
                for m in self.misplaced_examples[:max_items]
            )
            n = len(self.misplaced_examples)
            lines.append(
                f"{_count(n, 'example')} closer to another intent than to {_its(n)} own: "
                f"{shown}{_more(n, max_items)}"
            )
        if self.duplicates:
            shown = ", ".join(
                f"'{_clip(d.text_a, 30)}' ({d.intent_a}) / '{_clip(d.text_b, 30)}' ({d.intent_b})"
                for d in self.duplicates[:max_items]
            )
            n = self.duplicates_total or len(self.duplicates)
            lines.append(
                f"{_plural(n, 'pair')} of near-duplicate examples under different intents "
                f"(cosine >= {self.duplicate_threshold:.2f} or same text): "
                f"{shown}{_more(n, max_items)}"
            )
        if self.too_few_examples:
            items = sorted(self.too_few_examples.items(), key=lambda kv: (kv[1], kv[0]))
            shown = ", ".join(f"{name} ({count})" for name, count in items[: max_items * 2])
            lines.append(
                f"{_count(len(items), 'intent')} fewer than {self.min_examples} examples: "
                f"{shown}{_more(len(items), max_items * 2)}"
            )
        return lines

    def to_table(self, max_rows: int = 20) -> str:
        """The report as markdown tables (readable as plain text), longest lists truncated."""
        out = [
            f"# Intent overlap report: {_plural(len(self.intents), 'intent')}, "
            f"{_plural(self.n_examples, 'example')}",
            "",
        ]
        summary = self.summary_lines()
        out += [f"- {line}" for line in summary] if summary else ["No problems found."]

        out += ["", f"## Most similar intents (prototype cosine; flagged >= "
                    f"{self.similarity_threshold:.2f})", ""]
        rows = [
            [p.intent_a, p.intent_b, f"{p.similarity:.3f}", str(p.misplaced),
             "yes" if p.above_threshold else ""]
            for p in self.similar_intents
        ]
        out += _table(["intent A", "intent B", "similarity", "misplaced", "flagged"], rows,
                      max_rows, empty="(fewer than two intents)")

        out += ["", "## Examples closer to another intent than to their own "
                    "(own prototype without the example)", ""]
        rows = [
            [_clip(m.text, 60), m.intent, m.nearest_intent, f"{m.own_similarity:.3f}",
             f"{m.other_similarity:.3f}"]
            for m in self.misplaced_examples
        ]
        out += _table(["example", "intent", "nearer to", "own sim", "other sim"], rows,
                      max_rows, empty="(none)")

        out += ["", f"## Near-duplicate examples across intents (cosine >= "
                    f"{self.duplicate_threshold:.2f} or same text)", ""]
        rows = [
            [_clip(d.text_a, 40), d.intent_a, _clip(d.text_b, 40), d.intent_b,
             "same text" if d.identical_text else f"{d.similarity:.3f}"]
            for d in self.duplicates
        ]
        total = max(self.duplicates_total, len(rows))
        out += _table(["example A", "intent A", "example B", "intent B", "similarity"], rows,
                      max_rows, empty="(none)", total=total)

        out += ["", f"## Intents with fewer than {self.min_examples} examples", ""]
        rows = [
            [name, str(count)]
            for name, count in sorted(self.too_few_examples.items(), key=lambda kv: kv[1])
        ]
        out += _table(["intent", "examples"], rows, max_rows, empty="(none)")
        return "\n".join(out) + "\n"


def _count(n: int, noun: str) -> str:
    verb = "is" if n == 1 else "are"
    if noun == "intent":
        verb = "has" if n == 1 else "have"
    return f"{n} {noun}{'' if n == 1 else 's'} {verb}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _its(n: int) -> str:
    return "its" if n == 1 else "their"


def _more(total: int, shown: int) -> str:
    return f" (+{total - shown} more)" if total > shown else ""


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _cell(value: str) -> str:
    return str(value).replace("|", "\\|")


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    max_rows: int,
    empty: str,
    total: Optional[int] = None,
) -> List[str]:
    if not rows:
        return [empty]
    shown = [[_cell(c) for c in row] for row in rows[: max(max_rows, 1)]]
    widths = [max(len(h), *(len(r[i]) for r in shown)) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in shown]
    total = len(rows) if total is None else total
    if total > len(shown):
        lines.append(f"... and {total - len(shown)} more (see report.json)")
    return lines


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
    return OverlapReport(
        intents=list(names),
        counts=count_map,
        similar_intents=pairs,
        misplaced_examples=misplaced,
        duplicates=duplicates,
        too_few_examples=too_few,
        duplicates_total=total,
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
    sums = torch.zeros(n_classes, emb.shape[1], dtype=emb.dtype).index_add_(0, targets, emb)
    rest = sums[targets] - emb  # own intent without the example (leave-one-out)
    own = (emb * rest).sum(1) / rest.norm(dim=1).clamp(min=1e-12)
    to_protos = emb @ prototypes.T
    rows = torch.arange(n)
    to_protos[rows, targets] = -float("inf")
    other, nearest = to_protos.max(1)
    flagged = (counts[targets] >= 2) & (other > own)
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


# --- heatmap -------------------------------------------------------------------------------


def similarity_order(sim: np.ndarray) -> List[int]:
    """Order of the items that puts similar ones next to each other.

    Average-linkage agglomerative clustering on the similarity matrix; each merge joins the
    two clusters' ends that are most alike, so blocks of related intents form on the diagonal.
    """
    sim = np.asarray(sim, dtype=float)
    n = sim.shape[0]
    if n <= 2:
        return list(range(n))
    link = sim.copy()
    np.fill_diagonal(link, -np.inf)
    sizes = np.ones(n)
    active = np.ones(n, dtype=bool)
    clusters: Dict[int, List[int]] = {i: [i] for i in range(n)}
    for _ in range(n - 1):
        masked = np.where(active[:, None] & active[None, :], link, -np.inf)
        a, b = (int(x) for x in np.unravel_index(np.argmax(masked), masked.shape))
        left, right = clusters[a], clusters.pop(b)
        options = [(x, y) for x in (left, left[::-1]) for y in (right, right[::-1])]
        left, right = max(options, key=lambda xy: sim[xy[0][-1], xy[1][0]])
        clusters[a] = left + right
        merged = (link[a] * sizes[a] + link[b] * sizes[b]) / (sizes[a] + sizes[b])
        link[a, :] = merged
        link[:, a] = merged
        link[a, a] = -np.inf
        sizes[a] += sizes[b]
        active[b] = False
    return next(iter(clusters.values()))


def save_heatmap(
    report: OverlapReport,
    path: Union[str, Path],
    title: Optional[str] = None,
    max_label_chars: int = 40,
) -> Path:
    """Write the prototype-similarity heatmap as a PNG; intents ordered so that similar ones
    sit together. Sized for up to about 150 intents (labels shrink as the count grows)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sim = np.asarray(report.prototype_similarity, dtype=float)
    n = sim.shape[0]
    order = similarity_order(sim)
    sim = sim[np.ix_(order, order)] if n else sim
    names = [
        f"{_clip(report.intents[i], max_label_chars)} ({report.counts.get(report.intents[i], 0)})"
        for i in order
    ]
    shown = sim.copy()
    if n:
        np.fill_diagonal(shown, np.nan)  # always 1: drawn grey, kept out of the colour scale
    off = shown[~np.isnan(shown)] if n > 1 else np.zeros(0)
    vmin = float(min(off.min(), report.similarity_threshold - 0.1)) if off.size else 0.0

    annotate = n <= 25  # small enough to print each similarity in its cell
    side = min(max(6.0, (0.45 if annotate else 0.14) * n + 3.5), 26.0)
    font = 9.0 if n <= 30 else 7.0 if n <= 60 else 5.5 if n <= 100 else 4.5
    # The object-oriented Agg API: no pyplot, so a caller's backend and figures are untouched.
    fig = Figure(figsize=(side + 1.5, side), dpi=150 if n > 60 else 110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    try:
        cmap = matplotlib.colormaps["viridis"].copy()
    except AttributeError:  # matplotlib < 3.5
        cmap = matplotlib.cm.get_cmap("viridis").copy()
    cmap.set_bad("#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=vmin, vmax=1.0,
                      interpolation="nearest")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    ax.set_xlabel("intent (examples)")
    ax.set_ylabel("intent (examples)")
    for i in range(n):  # outline the flagged pairs
        for j in range(n):
            if i != j and sim[i, j] >= report.similarity_threshold:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                           edgecolor="red", linewidth=1.2))
            if annotate and i != j:
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if sim[i, j] < (vmin + 1.0) / 2 else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("cosine similarity of intent prototypes")
    ax.set_title(
        title
        or f"Intent prototype similarity ({n} intents; red: >= {report.similarity_threshold:.2f})",
        fontsize=12 if n <= 60 else 16,
    )
    fig.tight_layout()
    fig.savefig(path)
    return path


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
        encoder = getattr(getattr(model, "config", None), "encoder", "default")
        lines.append(
            f"For the full report and a heatmap run: rasa-meta check-data data/ "
            f"--encoder {encoder}"
        )
    return lines

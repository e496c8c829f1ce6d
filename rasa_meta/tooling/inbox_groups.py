"""Grouping unhandled messages by meaning, and finding confident predictions to review.

Everything here works on unit-length embeddings (numpy arrays) and is independent of Rasa:
the inbox feeds it the bot's own encoder's vectors.

Clustering is agglomerative with average linkage on cosine distance, cut at a distance
threshold, so the number of clusters follows from the data. The threshold is relative to the
bot: a factor times how broad its own intents are (:func:`intent_scale`), so a bot with broad
intents gets broad clusters and one with fine-grained intents fine ones. Linkage, factor and
the low-confidence bound were chosen on held-out intents of shared corpora
(``scripts/inbox_clustering.py``, ``docs/results/inbox/inbox_clustering.json``, README "NLU inbox").

Prototypes and leave-one-out similarities are the runtime's own
(:func:`~rasa_meta.runtime.heads.class_means`,
:func:`~rasa_meta.runtime.in_scope.leave_one_out_similarities`); the study's score of how well
clusters recover known groups is research code (``research/clustering.py``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from rasa_meta.runtime.heads import PrototypeHead, class_means
from rasa_meta.runtime.in_scope import leave_one_out_similarities

# Chosen on the valid splits of held-out intents (docs/results/inbox/inbox_clustering.json):
# the distance threshold is SCALE_FACTOR x intent_scale(the bot's examples).
DEFAULT_LINKAGE = "average"
DEFAULT_SCALE_FACTOR = 1.4
DEFAULT_DISTANCE_THRESHOLD = 0.5  # for tools without a bot; intent_scale's fallback x 1
LINKAGES = ("average", "complete", "single")
# Above this many distinct texts the tree is built on a sample and the rest is attached to
# the nearest cluster: the linkage needs n^2/2 distances in memory.
DEFAULT_MAX_CLUSTER_POINTS = 6000
# A cluster smaller than this (distinct texts) is reported as unclustered messages.
DEFAULT_MIN_CLUSTER_SIZE = 3
# A cluster is offered as more examples of its nearest intent when its messages' mean
# similarity to the intent's prototype reaches this quantile of the intent's own
# leave-one-out similarities (chosen for precision on held-out data,
# docs/results/inbox/inbox_clustering.json).
EXISTING_QUANTILE = 0.1
# Nearest training examples consulted to review a confident prediction.
REVIEW_NEIGHBOURS = 3

_WORD = re.compile(r"[a-z][a-z']+")


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.clip(norms, 1e-12, None)


def cosine_condensed(emb: np.ndarray) -> np.ndarray:
    """Condensed (upper-triangle) cosine distances of unit vectors, as scipy wants them."""
    from scipy.spatial.distance import squareform

    unit = _unit(emb)
    dist = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return squareform(dist, checks=False)


def agglomerative(
    emb: np.ndarray, threshold: float = DEFAULT_DISTANCE_THRESHOLD,
    linkage: str = DEFAULT_LINKAGE,
) -> np.ndarray:
    """Cluster ids (0..k-1, largest cluster first) from agglomerative clustering on cosine
    distance, merging while the linkage distance is at most ``threshold``."""
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as build_tree

    if linkage not in LINKAGES:
        raise ValueError(f"linkage must be one of {LINKAGES}, got {linkage!r}")
    n = len(emb)
    if n == 0:
        return np.zeros(0, dtype=int)
    if n == 1:
        return np.zeros(1, dtype=int)
    tree = build_tree(cosine_condensed(emb), method=linkage)
    return _by_size(fcluster(tree, t=threshold, criterion="distance"))


def _by_size(raw: np.ndarray) -> np.ndarray:
    """Renumber cluster ids so that 0 is the largest (ties: first seen)."""
    counts = Counter(raw.tolist())
    first = {c: i for i, c in reversed(list(enumerate(raw.tolist())))}
    order = sorted(counts, key=lambda c: (-counts[c], first[c]))
    new = {c: i for i, c in enumerate(order)}
    return np.array([new[c] for c in raw.tolist()], dtype=int)


def cluster_embeddings(
    emb: np.ndarray,
    threshold: float = DEFAULT_DISTANCE_THRESHOLD,
    linkage: str = DEFAULT_LINKAGE,
    max_points: int = DEFAULT_MAX_CLUSTER_POINTS,
    priority: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """:func:`agglomerative` on at most ``max_points`` vectors; the others join the cluster
    whose centroid is nearest when it is within ``threshold``, else stay alone.

    ``priority`` picks which vectors build the tree (highest first, e.g. how often a text was
    sent); without it the first ``max_points``.
    """
    n = len(emb)
    if n <= max_points:
        return agglomerative(emb, threshold, linkage)
    order = np.argsort(-np.asarray(priority, dtype=float), kind="stable") \
        if priority is not None else np.arange(n)
    core, rest = order[:max_points], order[max_points:]
    core_labels = agglomerative(emb[core], threshold, linkage)
    k = int(core_labels.max()) + 1
    centroids = _unit(np.stack([emb[core][core_labels == c].mean(0) for c in range(k)]))
    labels = np.empty(n, dtype=int)
    labels[core] = core_labels
    unit_rest = _unit(emb[rest])
    nearest = np.zeros(len(rest), dtype=int)
    best = np.full(len(rest), -np.inf)
    for start in range(0, len(rest), 4096):  # bounded memory for very large inboxes
        sims = unit_rest[start:start + 4096] @ centroids.T
        nearest[start:start + 4096] = sims.argmax(1)
        best[start:start + 4096] = sims.max(1)
    joined = (1.0 - best) <= threshold
    labels[rest[joined]] = nearest[joined]
    labels[rest[~joined]] = k + np.arange(int((~joined).sum()))
    return _by_size(labels)


def prototypes(support: np.ndarray, targets: np.ndarray, n_intents: int) -> np.ndarray:
    """Unit-length mean of each intent's training examples: the prototype head's classes, as
    the runtime computes them (:func:`~rasa_meta.runtime.heads.class_means`)."""
    return class_means(torch.from_numpy(np.asarray(support, dtype=np.float64)),
                       torch.as_tensor(np.asarray(targets), dtype=torch.long), n_intents).numpy()


def intent_scale(support: np.ndarray, targets: np.ndarray, n_intents: int) -> float:
    """How broad the bot's intents are: the median, over intents with two or more examples,
    of the mean cosine distance between two examples of the intent. Average linkage merges
    clusters by exactly that quantity, so a threshold relative to it asks for clusters about
    as broad as the intents the author wrote (0.5 if no intent has two examples)."""
    unit = _unit(support)
    spreads = []
    for intent in range(n_intents):
        rows = unit[targets == intent]
        n = len(rows)
        if n < 2:
            continue
        sims = rows @ rows.T
        spreads.append(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))
    return float(np.median(spreads)) if spreads else 0.5


def intent_spread(
    support: np.ndarray, targets: np.ndarray, n_intents: int, quantile: float = 0.0
) -> np.ndarray:
    """Per intent, how far from its prototype the intent's own data reaches: the ``quantile``
    (0: the lowest) of its examples' similarity to the mean of its other examples
    (leave-one-out, the runtime's
    :func:`~rasa_meta.runtime.in_scope.leave_one_out_similarities`). An intent with a single
    example gets 1.0 (nothing to compare)."""
    targets = np.asarray(targets)
    out = np.ones(n_intents)
    if len(targets) == 0:
        return out
    # a prototype head over the examples; zero-padded names keep the intents' order
    head = PrototypeHead().fit(torch.from_numpy(_unit(support)).float(),
                               [f"{t:09d}" for t in targets.tolist()])
    loo = leave_one_out_similarities(head).double().numpy()
    counts = np.bincount(targets, minlength=n_intents)
    of = targets[counts[targets] >= 2]  # the intent of each leave-one-out similarity
    for intent in np.unique(of):
        out[intent] = float(np.quantile(loo[of == intent], quantile))
    return out


@dataclass
class ClusterSummary:
    """One cluster of unhandled messages, as the report shows it."""

    id: int
    members: List[int]  # indices of distinct texts, nearest to the centroid first
    messages: int  # user messages, repeats included
    senders: int
    nearest_intent: str
    similarity: float  # cosine of the cluster's centroid to that intent's prototype
    near_existing: bool  # its messages are as close to the intent as the intent's examples
    member_similarity: float = 0.0  # mean cosine of its messages to that prototype
    name: str = ""  # suggested intent: the existing one, or a candidate new one
    cohesion: float = 0.0  # mean cosine of the members to their centroid


def summarise_clusters(
    emb: np.ndarray,
    cluster_ids: np.ndarray,
    counts: Sequence[int],
    senders: Sequence[Iterable[str]],
    protos: np.ndarray,
    spread: np.ndarray,
    intents: Sequence[str],
    min_size: int = DEFAULT_MIN_CLUSTER_SIZE,
) -> Tuple[List[ClusterSummary], List[int]]:
    """Clusters of at least ``min_size`` distinct texts (largest first, ids renumbered from
    1) and the indices of the texts left unclustered.

    A cluster is ``near_existing`` when its messages are, on average, as similar to the
    nearest intent's prototype as that intent's own examples are to theirs (``spread``, see
    :func:`intent_spread`): they read like more examples of that intent. Otherwise it is a
    candidate new intent. Messages, not the centroid, are compared: a mean of many messages
    sits closer to any prototype than a single message does.
    """
    unit = _unit(emb)
    summaries: List[ClusterSummary] = []
    leftover: List[int] = []
    for cluster in np.unique(cluster_ids):
        idx = np.flatnonzero(cluster_ids == cluster)
        if len(idx) < min_size:
            leftover.extend(idx.tolist())
            continue
        centroid = _unit(unit[idx].mean(0))
        closeness = unit[idx] @ centroid
        idx = idx[np.argsort(-closeness, kind="stable")]
        sims = protos @ centroid if len(protos) else np.zeros(0)
        nearest = int(sims.argmax()) if len(sims) else -1
        similarity = float(sims[nearest]) if nearest >= 0 else 0.0
        members_sim = float((unit[idx] @ protos[nearest]).mean()) if nearest >= 0 else 0.0
        summaries.append(ClusterSummary(
            id=0, members=idx.tolist(), messages=int(sum(counts[i] for i in idx)),
            senders=len(set().union(*(set(senders[i]) for i in idx))),
            nearest_intent=intents[nearest] if nearest >= 0 else "",
            similarity=similarity,
            near_existing=bool(nearest >= 0 and members_sim >= spread[nearest]),
            member_similarity=members_sim,
            cohesion=float(closeness.mean()),
        ))
    summaries.sort(key=lambda s: (-s.messages, -len(s.members), s.members[0]))
    for number, summary in enumerate(summaries, start=1):
        summary.id = number
    return summaries, sorted(leftover, key=lambda i: (-counts[i], i))


@dataclass
class ReviewItem:
    """A confident prediction whose nearest training examples carry another intent."""

    index: int  # into the confident messages
    predicted: str
    confidence: float
    neighbours_intent: str
    neighbours: List[Tuple[int, float]]  # (training example index, cosine)


def review_confident(
    emb: np.ndarray,
    predicted: Sequence[str],
    confidence: Sequence[float],
    support: np.ndarray,
    support_intents: Sequence[str],
    k: int = REVIEW_NEIGHBOURS,
) -> List[ReviewItem]:
    """Confident messages whose ``k`` nearest training examples mostly (more than half) carry
    one intent other than the predicted one: the head and the examples disagree, so the
    prediction, or the examples, deserve a look. Most similar first."""
    if len(emb) == 0 or len(support) == 0:
        return []
    k = min(k, len(support))
    unit, sup = _unit(emb), _unit(support)
    items: List[ReviewItem] = []
    for start in range(0, len(unit), 2048):
        sims = unit[start:start + 2048] @ sup.T
        top = np.argsort(-sims, axis=1)[:, :k]
        for row, neighbours in enumerate(top):
            i = start + row
            votes = Counter(support_intents[j] for j in neighbours)
            intent, count = votes.most_common(1)[0]
            if intent != predicted[i] and count * 2 > k:
                items.append(ReviewItem(
                    index=i, predicted=predicted[i], confidence=float(confidence[i]),
                    neighbours_intent=intent,
                    neighbours=[(int(j), float(sims[row, j])) for j in neighbours],
                ))
    items.sort(key=lambda it: -it.neighbours[0][1])
    return items


def candidate_name(texts: Sequence[str], taken: Iterable[str]) -> str:
    """A readable placeholder intent name from the words the texts share most, e.g.
    ``new_points_loyalty``; unique among ``taken``."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    stop = set(ENGLISH_STOP_WORDS) | {"i'm", "i'd", "i've", "don't", "can't", "it's", "what's",
                                      "please", "hi", "hello", "hey", "thanks"}
    words: Counter = Counter()
    for text in texts:
        # a word counts once per text, so one long message cannot name the cluster
        words.update({w.strip("'") for w in _WORD.findall(text.lower())} - stop)
    top = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 2]
    base = "new_" + "_".join(sorted(top[:2])) if top else "new_intent"
    taken = set(taken)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name

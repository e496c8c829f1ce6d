"""Few-shot episodes: one builder for meta-training, the inner loop and the in-scope scorer.

An episode is built in small steps, in the spirit of learn2learn's task transforms:

1. :func:`group_by_label` - the items (texts, example indices, embedding rows) of each label;
2. choose the ways - :func:`sample_ways` (N of them at random, meta-training) or
   :func:`epoch_ways` (every label once, in shuffled chunks: one epoch of a bot's intents);
3. :func:`build_episode` - split each chosen class's items into support and query with a
   split rule: :func:`fixed_shots` (K + Q drawn, meta-training), :func:`halves` (a bot's
   examples halved, the inner loop at `rasa train`) or :func:`shuffled_shots` (the in-scope
   scorer's simulated bots).

:class:`EpisodeSampler` composes them over corpora for meta-training; the inner loop
(:func:`rasa_meta.training.inner_loop.bot_episodes`) and the scorer's training
(:func:`rasa_meta.training.in_scope.draw_scorer_bot`) compose the same steps. Every step
draws from the ``random.Random`` it is given, in a fixed order, so a seed gives the same
episodes as the three hand-written samplers these steps replace
(``tests/data/episodes_before_refactor.json``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)

import torch

from rasa_meta.training.corpus import IntentCorpus

T = TypeVar("T")


@dataclass
class Episode(Generic[T]):
    """One few-shot task: classify the queries given labelled supports.

    Items are whatever the episode was built from: texts in meta-training, example indices in
    the inner loop, embedding rows' indices for the in-scope scorer. Targets index ``classes``.
    """

    classes: List[str]
    support: List[T]
    support_targets: torch.Tensor
    query: List[T]
    query_targets: torch.Tensor
    corpus: str = ""
    domain: Optional[str] = None

    @property
    def n_way(self) -> int:
        return len(self.classes)

    @property
    def support_labels(self) -> List[str]:
        return [self.classes[t] for t in self.support_targets.tolist()]

    @property
    def query_labels(self) -> List[str]:
        return [self.classes[t] for t in self.query_targets.tolist()]


# A split rule: one class's items -> (support, query), drawing from the rng.
Split = Callable[[Sequence[Any], random.Random], Tuple[List[Any], List[Any]]]


def group_by_label(items: Sequence[T], labels: Sequence[str]) -> Dict[str, List[T]]:
    """Items of each label, in their order (labels in order of first occurrence)."""
    groups: Dict[str, List[T]] = {}
    for item, label in zip(items, labels):
        groups.setdefault(label, []).append(item)
    return groups


def sample_ways(candidates: Sequence[str], n_way: int, rng: random.Random) -> List[str]:
    """``n_way`` classes drawn from ``candidates`` (0, or more than there are: all of them,
    in random order)."""
    n = len(candidates) if n_way == 0 else min(n_way, len(candidates))
    return rng.sample(list(candidates), n)


def epoch_ways(labels: Sequence[str], n_way: int, rng: random.Random) -> List[List[str]]:
    """Every label exactly once, shuffled, in chunks of ``n_way``: one epoch's episodes."""
    order = sorted(labels)
    rng.shuffle(order)
    return [order[start : start + n_way] for start in range(0, len(order), n_way)]


def fixed_shots(k_shot: int, q_query: int) -> Split:
    """K support and Q query items drawn without replacement (the class needs K + Q)."""

    def split(items: Sequence[Any], rng: random.Random) -> Tuple[List[Any], List[Any]]:
        drawn = rng.sample(list(items), k_shot + q_query)
        return drawn[:k_shot], drawn[k_shot:]

    return split


def halves(max_per_class: int) -> Split:
    """Up to ``max_per_class`` items drawn, the first half (at least one) support, the rest
    query: a bot's examples, where a single-example intent has no query."""

    def split(items: Sequence[Any], rng: random.Random) -> Tuple[List[Any], List[Any]]:
        drawn = rng.sample(list(items), min(len(items), max_per_class))
        half = max(1, len(drawn) // 2)
        return drawn[:half], drawn[half:]

    return split


def shuffled_shots(k_shot: int, q_query: int) -> Split:
    """All items shuffled; K support (at most all but one, so a query is left) and up to Q
    queries after them."""

    def split(items: Sequence[Any], rng: random.Random) -> Tuple[List[Any], List[Any]]:
        order = list(items)
        rng.shuffle(order)
        n_support = min(k_shot, len(order) - 1)
        return order[:n_support], order[n_support : n_support + q_query]

    return split


def build_episode(
    groups: Mapping[str, Sequence[T]],
    classes: Sequence[str],
    split: Split,
    rng: random.Random,
    corpus: str = "",
    domain: Optional[str] = None,
) -> Episode[T]:
    """Split each class's items (in ``classes`` order) into support and query. A class whose
    split leaves no support is dropped; the targets index the classes kept."""
    kept: List[str] = []
    support: List[T] = []
    query: List[T] = []
    s_targets: List[int] = []
    q_targets: List[int] = []
    for intent in classes:
        s, q = split(groups[intent], rng)
        if not s:
            continue
        target = len(kept)
        kept.append(intent)
        support += s
        query += q
        s_targets += [target] * len(s)
        q_targets += [target] * len(q)
    return Episode(
        kept, support, torch.tensor(s_targets, dtype=torch.long), query,
        torch.tensor(q_targets, dtype=torch.long), corpus, domain,
    )


def split_classes(
    corpus: IntentCorpus, valid_fraction: float = 0.2, seed: int = 0
) -> Tuple[IntentCorpus, IntentCorpus]:
    """Split a corpus into meta-train and meta-valid parts that share no intent.

    Where domains are known, each domain is split on its own so both sides span all domains.
    """
    rng = random.Random(seed)
    groups = group_by_label(corpus.intents, [corpus.domains.get(i, "") for i in corpus.intents])
    valid: List[str] = []
    for domain in sorted(groups):
        intents = sorted(groups[domain])
        rng.shuffle(intents)
        valid += intents[: max(1, round(len(intents) * valid_fraction))] if len(intents) > 1 else []
    train = [i for i in corpus.intents if i not in set(valid)]
    return (
        corpus.subset(train, f"{corpus.name}:meta-train"),
        corpus.subset(valid, f"{corpus.name}:meta-valid"),
    )


@dataclass
class _Pool:
    """One corpus's intents that can fill an episode, and those intents per domain."""

    corpus: IntentCorpus
    groups: Dict[str, List[str]]
    by_domain: Dict[str, List[str]]


class EpisodeSampler:
    """Samples seeded N-way K-shot + Q-query episodes of texts across corpora.

    A corpus is drawn in proportion to its number of intents. With probability
    ``domain_prob`` and where the corpus knows its domains, all N classes come from one
    domain (hard negatives: "transfer" vs "transactions" in banking); otherwise from anywhere
    in the corpus (breadth). ``n_way=0`` (or an N above a corpus's intent count) takes every
    intent of the drawn corpus: the many-way limit, where an episode is pooled supervision
    over a whole corpus.
    """

    def __init__(
        self,
        corpora: Sequence[IntentCorpus],
        n_way: int = 10,
        k_shot: int = 5,
        q_query: int = 5,
        seed: int = 0,
        domain_prob: float = 0.5,
    ) -> None:
        if n_way == 1 or n_way < 0 or k_shot < 1 or q_query < 1:
            raise ValueError(
                "Episodes need n_way >= 2 (or 0 for all intents), k_shot >= 1 and q_query >= 1."
            )
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        self.domain_prob = domain_prob
        self.split = fixed_shots(k_shot, q_query)
        self.rng = random.Random(seed)
        self.pools: List[_Pool] = []
        for corpus in corpora:
            groups = {
                intent: texts
                for intent, texts in corpus.by_intent().items()
                if len(texts) >= k_shot + q_query
            }
            if len(groups) < 2:
                continue
            by_domain: Dict[str, List[str]] = {}
            for intent in sorted(groups):
                domain = corpus.domains.get(intent)
                if domain:
                    by_domain.setdefault(domain, []).append(intent)
            self.pools.append(_Pool(corpus, groups, by_domain))
        if not self.pools:
            raise ValueError(
                f"No corpus has two intents with at least k_shot + q_query = "
                f"{k_shot + q_query} examples."
            )
        self.weights = [len(pool.groups) for pool in self.pools]

    def sample(self) -> Episode[str]:
        pool = self.rng.choices(self.pools, weights=self.weights)[0]
        domain, candidates = self._candidates(pool)
        classes = sample_ways(candidates, self.n_way, self.rng)
        return build_episode(
            pool.groups, classes, self.split, self.rng, pool.corpus.name, domain
        )

    def _candidates(self, pool: _Pool) -> Tuple[Optional[str], List[str]]:
        """One domain's intents (with probability domain_prob) or all the corpus's."""
        rich_domains = sorted(d for d, intents in pool.by_domain.items() if len(intents) >= 2)
        if rich_domains and self.rng.random() < self.domain_prob:
            domain = self.rng.choice(rich_domains)
            return domain, pool.by_domain[domain]
        return None, sorted(pool.groups)

    def __iter__(self) -> Iterator[Episode[str]]:
        while True:
            yield self.sample()

    def take(self, n: int) -> List[Episode[str]]:
        return [self.sample() for _ in range(n)]

"""N-way K-shot episodes over labelled corpora, and class-disjoint meta-train/valid splits."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from rasa_meta.training.corpus import IntentCorpus


@dataclass
class Episode:
    """One few-shot task: classify the queries given K labelled supports per class."""

    classes: List[str]
    support_texts: List[str]
    support_targets: torch.Tensor
    query_texts: List[str]
    query_targets: torch.Tensor
    corpus: str
    domain: Optional[str] = None

    @property
    def n_way(self) -> int:
        return len(self.classes)


def split_classes(
    corpus: IntentCorpus, valid_fraction: float = 0.2, seed: int = 0
) -> Tuple[IntentCorpus, IntentCorpus]:
    """Split a corpus into meta-train and meta-valid parts that share no intent.

    Where domains are known, each domain is split on its own so both sides span all domains.
    """
    rng = random.Random(seed)
    groups: Dict[str, List[str]] = {}
    for intent in corpus.intents:
        groups.setdefault(corpus.domains.get(intent, ""), []).append(intent)
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


class EpisodeSampler:
    """Samples seeded N-way K-shot + Q-query episodes across corpora.

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
        self.rng = random.Random(seed)
        self.pools: List[Tuple[IntentCorpus, Dict[str, List[str]], Dict[str, List[str]]]] = []
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
            self.pools.append((corpus, groups, by_domain))
        if not self.pools:
            raise ValueError(
                f"No corpus has two intents with at least k_shot + q_query = "
                f"{k_shot + q_query} examples."
            )
        self.weights = [len(groups) for _, groups, _ in self.pools]

    def sample(self) -> Episode:
        corpus, groups, by_domain = self.rng.choices(self.pools, weights=self.weights)[0]
        domain = None
        candidates = sorted(groups)
        rich_domains = sorted(d for d, intents in by_domain.items() if len(intents) >= 2)
        if rich_domains and self.rng.random() < self.domain_prob:
            domain = self.rng.choice(rich_domains)
            candidates = by_domain[domain]
        n_way = len(candidates) if self.n_way == 0 else min(self.n_way, len(candidates))
        classes = self.rng.sample(candidates, n_way)
        support, s_targets, query, q_targets = [], [], [], []
        for target, intent in enumerate(classes):
            texts = self.rng.sample(groups[intent], self.k_shot + self.q_query)
            support += texts[: self.k_shot]
            query += texts[self.k_shot :]
            s_targets += [target] * self.k_shot
            q_targets += [target] * self.q_query
        return Episode(
            classes,
            support,
            torch.tensor(s_targets),
            query,
            torch.tensor(q_targets),
            corpus.name,
            domain,
        )

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()

    def take(self, n: int) -> List[Episode]:
        return [self.sample() for _ in range(n)]

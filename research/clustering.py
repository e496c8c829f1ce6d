"""How well clusters recover known groups: the score of the inbox's clustering study.

``scripts/inbox_clustering.py`` simulates a bot's traffic on labelled corpora (messages of
intents the bot lacks among those it handles and out-of-scope ones), clusters what the bot
does not handle as the inbox does (:mod:`rasa_meta.tooling.inbox_groups`), and scores each
missing intent with :func:`score_groups`: the share of its messages in one cluster that is
mostly that intent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np


@dataclass
class GroupScore:
    """How well clusters recover known groups (e.g. the messages of one missing intent)."""

    coverage: Dict[str, float]  # group -> share of its messages in its best pure cluster
    purity: Dict[str, float]  # group -> share of that cluster that belongs to the group
    clusters: Dict[str, int] = field(default_factory=dict)  # group -> that cluster's id

    @property
    def mean_coverage(self) -> float:
        return float(np.mean(list(self.coverage.values()))) if self.coverage else 0.0

    def recovered(self, min_coverage: float = 0.8) -> float:
        """Share of groups with at least ``min_coverage`` of their messages in one pure
        cluster."""
        if not self.coverage:
            return 0.0
        return float(np.mean([c >= min_coverage for c in self.coverage.values()]))


def score_groups(
    cluster_ids: Sequence[int], groups: Sequence[Optional[str]], min_purity: float = 0.8
) -> GroupScore:
    """For each group (None: messages of no group, e.g. out-of-scope noise): the cluster
    holding most of its messages among clusters where the group makes up at least
    ``min_purity`` of the members, and the share of the group it holds (0 when no cluster is
    that pure). This is the inbox's target: a missing intent shows up as one cluster that
    is mostly that intent."""
    cluster_ids = np.asarray(cluster_ids)
    sizes = Counter(cluster_ids.tolist())
    coverage: Dict[str, float] = {}
    purity: Dict[str, float] = {}
    chosen: Dict[str, int] = {}
    names = sorted({g for g in groups if g is not None})
    group_arr = np.array([g if g is not None else "\0none" for g in groups], dtype=object)
    for name in names:
        members = cluster_ids[group_arr == name]
        best_cluster, best_count, best_purity = -1, 0, 0.0
        for cluster, count in Counter(members.tolist()).items():
            share = count / sizes[cluster]
            if share >= min_purity and count > best_count:
                best_cluster, best_count, best_purity = cluster, count, share
        coverage[name] = best_count / len(members)
        purity[name] = best_purity
        chosen[name] = best_cluster
    return GroupScore(coverage, purity, chosen)

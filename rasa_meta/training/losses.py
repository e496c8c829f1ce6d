"""Metric meta-learning objectives over unit-length embeddings of one episode."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from rasa_meta.runtime.config import OBJECTIVES
from rasa_meta.runtime.heads import class_means


def prototypical_loss(
    support: torch.Tensor,
    support_targets: torch.Tensor,
    query: torch.Tensor,
    query_targets: torch.Tensor,
    scale: torch.Tensor,
    names: Optional[torch.Tensor] = None,
    name_weight: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of queries over ``scale * cos(query, prototype)`` (Snell et al. 2017).

    ``names`` (n_classes, dim; zero rows for none): each class's embedded name, counted as
    ``name_weight`` examples of its prototype, as the component counts it."""
    n_classes = int(support_targets.max()) + 1
    prototypes = class_means(support, support_targets, n_classes, names, name_weight)
    return F.cross_entropy(scale * query @ prototypes.T, query_targets)


def supervised_contrastive_loss(
    embeddings: torch.Tensor, targets: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over one batch.

    Every same-label pair is a positive and every other example a negative, computed from a
    single (b, b) similarity matrix: no list of pairs is ever built, so the cost grows with
    the batch, not with the number of pairs a Siamese dataset would enumerate.
    """
    b = embeddings.shape[0]
    logits = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(b, dtype=torch.bool, device=embeddings.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (targets.unsqueeze(0) == targets.unsqueeze(1)) & ~self_mask
    n_pos = positives.sum(1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return embeddings.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


def uniformity_loss(embeddings: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity of unit vectors on the sphere (Wang & Isola 2020):
    ``log mean_{i != j} exp(-t * ||x_i - x_j||^2)``.

    Lower is more uniform. Supervised training pulls each class together and, unchecked,
    collapses the whole space into a narrow cone (anisotropy), which hurts intents that are
    new at adaptation time; adding this term keeps the embeddings spread out.
    """
    n = embeddings.shape[0]
    if n < 2:
        return embeddings.sum() * 0.0
    sq_dist = (2 - 2 * embeddings @ embeddings.T).clamp(min=0)
    off_diag = ~torch.eye(n, dtype=torch.bool, device=embeddings.device)
    return torch.logsumexp(-t * sq_dist[off_diag], dim=0) - torch.log(
        torch.tensor(float(n * (n - 1)), device=embeddings.device)
    )


def episode_loss(
    objective: str,
    support: torch.Tensor,
    support_targets: torch.Tensor,
    query: torch.Tensor,
    query_targets: torch.Tensor,
    scale: torch.Tensor,
    contrastive_temperature: float = 0.07,
    uniformity_weight: float = 0.0,
    names: Optional[torch.Tensor] = None,
    name_weight: float = 0.0,
) -> torch.Tensor:
    """The chosen objective on one episode ("both" adds them with equal weight), plus
    ``uniformity_weight`` times the uniformity regulariser over all its embeddings.
    ``names``/``name_weight``: the classes' embedded names in the prototypes (see
    :func:`prototypical_loss`)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective '{objective}', expected one of {OBJECTIVES}.")
    loss = support.new_zeros(())
    if objective in ("prototypical", "both"):
        loss = loss + prototypical_loss(support, support_targets, query, query_targets, scale,
                                        names, name_weight)
    if objective in ("contrastive", "both"):
        emb = torch.cat([support, query])
        loss = loss + supervised_contrastive_loss(
            emb, torch.cat([support_targets, query_targets]), contrastive_temperature
        )
    if uniformity_weight:
        loss = loss + uniformity_weight * uniformity_loss(torch.cat([support, query]))
    return loss

"""Heads over the encoder's unit vectors: prototypes (one mean per intent) or matching
(attention over every support example). Both are fitted in closed form, no training loop."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

HEAD_TYPES = ("prototype", "matching")
# Softmax temperature over cosine similarity for an encoder whose metadata records no learned
# similarity scale (a plain Hugging Face or sentence-transformers model).
FALLBACK_TEMPERATURE = 0.05


def encoder_temperature(metadata: Dict[str, Any]) -> float:
    """Softmax temperature over cosine similarity: the inverse of the scale meta-training
    learned (in the encoder's metadata), else :data:`FALLBACK_TEMPERATURE`."""
    scale = metadata.get("similarity_scale")
    return 1.0 / float(scale) if scale else FALLBACK_TEMPERATURE


def label_index(labels: Sequence[str]) -> tuple:
    """Sorted distinct labels and each example's index into them."""
    names = sorted(set(labels))
    pos = {n: i for i, n in enumerate(names)}
    return names, torch.tensor([pos[lab] for lab in labels], dtype=torch.long)


def class_means(embeddings: torch.Tensor, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Unit-length mean embedding of each class: the prototypes of the head, of the episode
    loss (differentiable, on the embeddings' device) and of the data reports."""
    sums = embeddings.new_zeros(n_classes, embeddings.shape[1]).index_add(0, targets, embeddings)
    counts = torch.bincount(targets, minlength=n_classes).clamp(min=1).unsqueeze(1)
    return F.normalize(sums / counts, dim=-1)


class PrototypeHead:
    """Nearest-prototype classifier: softmax over cosine similarity / temperature."""

    kind = "prototype"

    def __init__(self, temperature: float = FALLBACK_TEMPERATURE) -> None:
        self.temperature = float(temperature)
        self.labels: List[str] = []
        self.support = torch.zeros(0, 0)
        self.support_targets = torch.zeros(0, dtype=torch.long)
        self.prototypes = torch.zeros(0, 0)
        self.weights: Optional[torch.Tensor] = None  # refined class vectors, if any

    def fit(self, embeddings: torch.Tensor, labels: Sequence[str]) -> PrototypeHead:
        self.labels, self.support_targets = label_index(labels)
        # clone: embeddings made under inference_mode cannot take part in refine()'s autograd
        self.support = embeddings.float().cpu().clone()
        self.prototypes = class_means(self.support, self.support_targets, len(self.labels))
        return self

    def similarities(self, queries: torch.Tensor) -> torch.Tensor:
        """(n, classes) cosine similarity of each query to each intent."""
        return queries.float() @ self.prototypes.T

    def predict_proba(self, queries: torch.Tensor) -> torch.Tensor:
        classes = self.prototypes if self.weights is None else F.normalize(self.weights, dim=-1)
        return torch.softmax(queries.float() @ classes.T / self.temperature, dim=-1)

    def refine(self, steps: int, learning_rate: float = 0.01) -> PrototypeHead:
        """Proto-MAML-style adaptation: start a cosine classifier at the prototypes and take
        ``steps`` full-batch gradient steps of cross-entropy on the support examples.

        Prototypes weigh every example equally; the refined vectors move away from the
        examples that neighbouring intents share. Similarities (used for out-of-scope
        scores and explanations) stay on the prototypes.
        """
        if steps <= 0 or len(self.labels) < 2:
            return self
        weights = self.prototypes.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([weights], lr=learning_rate)
        with torch.enable_grad():
            for _ in range(steps):
                logits = self.support @ F.normalize(weights, dim=-1).T / self.temperature
                loss = F.cross_entropy(logits, self.support_targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.weights = weights.detach()
        return self

    def state_dict(self) -> Dict[str, torch.Tensor]:
        state = {"support": self.support, "support_targets": self.support_targets}
        if self.weights is not None:
            state["weights"] = self.weights
        return state

    def load_state(self, labels: List[str], state: Dict[str, torch.Tensor]) -> PrototypeHead:
        self.labels = list(labels)
        self.support = state["support"].float()
        self.support_targets = state["support_targets"].long()
        self.prototypes = class_means(self.support, self.support_targets, len(self.labels))
        self.weights = state["weights"].float() if "weights" in state else None
        return self


class MatchingHead(PrototypeHead):
    """Matching network: attention over all support examples; a class's probability is
    the attention mass on its examples. Keeps multi-modal intents apart where a mean blurs."""

    kind = "matching"

    def similarities(self, queries: torch.Tensor) -> torch.Tensor:
        """(n, classes) similarity to each intent's nearest example."""
        sims = queries.float() @ self.support.T
        out = torch.full((sims.shape[0], len(self.labels)), -1.0)
        index = self.support_targets.unsqueeze(0).expand_as(sims)
        return out.scatter_reduce(1, index, sims, reduce="amax", include_self=True)

    def refine(self, steps: int, learning_rate: float = 0.01) -> MatchingHead:
        return self  # attention over the examples themselves: nothing to refine

    def predict_proba(self, queries: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(queries.float() @ self.support.T / self.temperature, dim=-1)
        probs = torch.zeros(attention.shape[0], len(self.labels))
        return probs.index_add_(1, self.support_targets, attention)


def make_head(kind: str, temperature: float) -> PrototypeHead:
    if kind == "prototype":
        return PrototypeHead(temperature)
    if kind == "matching":
        return MatchingHead(temperature)
    raise ValueError(f"Unknown head '{kind}', expected one of {HEAD_TYPES}.")

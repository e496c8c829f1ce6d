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


def label_index(labels: Sequence[str], names: Optional[Sequence[str]] = None) -> tuple:
    """Sorted distinct labels (or ``names``, which must hold them) and each example's index
    into them."""
    names = sorted(set(labels)) if names is None else list(names)
    pos = {n: i for i, n in enumerate(names)}
    return names, torch.tensor([pos[lab] for lab in labels], dtype=torch.long)


def class_means(
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    n_classes: int,
    extra: Optional[torch.Tensor] = None,
    extra_weight: float = 0.0,
) -> torch.Tensor:
    """Unit-length mean embedding of each class: the prototypes of the head, of the episode
    loss (differentiable, on the embeddings' device) and of the data reports.

    ``extra`` (n_classes, dim): one more vector per class (its name or description; zero rows
    for none) counted as ``extra_weight`` examples; a class with no examples is its extra."""
    sums = embeddings.new_zeros(n_classes, embeddings.shape[1]).index_add(0, targets, embeddings)
    counts = torch.bincount(targets, minlength=n_classes).unsqueeze(1).to(sums.dtype)
    if extra is not None and extra_weight > 0:
        sums = sums + extra_weight * extra.to(sums)
        counts = counts + extra_weight * (extra.abs().sum(1, keepdim=True) > 0).to(sums)
    return F.normalize(sums / counts.clamp(min=1), dim=-1)


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
        # the intents' names or descriptions embedded (zero rows: none), and what they weigh
        self.label_support: Optional[torch.Tensor] = None
        self.label_weight = 0.0

    def fit(
        self,
        embeddings: torch.Tensor,
        labels: Sequence[str],
        label_embeddings: Optional[Dict[str, torch.Tensor]] = None,
        label_weight: float = 0.0,
    ) -> PrototypeHead:
        """Prototypes of the examples; with ``label_weight > 0``, each intent's embedded name
        or description in ``label_embeddings`` counts as that many more examples, and an
        intent there with no examples is known by it alone (zero-shot)."""
        extra = label_embeddings if label_weight > 0 and label_embeddings else {}
        names = sorted(set(labels) | set(extra))
        self.labels, self.support_targets = label_index(list(labels), names)
        # clone: embeddings made under inference_mode cannot take part in refine()'s autograd
        self.support = embeddings.float().cpu().clone()
        self.label_support, self.label_weight = None, 0.0
        if extra:
            self.label_support = torch.zeros(len(names), self.support.shape[1])
            for i, name in enumerate(names):
                if name in extra:
                    self.label_support[i] = extra[name].float().cpu()
            self.label_weight = float(label_weight)
        self.prototypes = self._class_means()
        return self

    def _class_means(self) -> torch.Tensor:
        return class_means(self.support, self.support_targets, len(self.labels),
                           self.label_support, self.label_weight)

    def class_sums(self) -> torch.Tensor:
        """(classes, dim) sum of each intent's examples, its name or description counted as
        ``label_weight`` examples: the prototype before normalising (see leave-one-out)."""
        sums = torch.zeros(len(self.labels), self.support.shape[1]).index_add_(
            0, self.support_targets, self.support)
        if self.label_support is not None and self.label_weight > 0:
            sums = sums + self.label_weight * self.label_support
        return sums

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
        examples that neighbouring intents share. Intent names or descriptions (see
        :meth:`fit`) take part as examples of weight ``label_weight``. Similarities (used
        for out-of-scope scores and explanations) stay on the prototypes.
        """
        if steps <= 0 or len(self.labels) < 2:
            return self
        weights = self.prototypes.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([weights], lr=learning_rate)
        support, targets, example_weights = self._refine_examples()
        with torch.enable_grad():
            for _ in range(steps):
                logits = support @ F.normalize(weights, dim=-1).T / self.temperature
                if example_weights is None:
                    loss = F.cross_entropy(logits, targets)
                else:
                    losses = F.cross_entropy(logits, targets, reduction="none")
                    loss = (losses * example_weights).sum() / example_weights.sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.weights = weights.detach()
        return self

    def _refine_examples(self) -> tuple:
        """What the refined head is trained on: the examples, and each intent's name or
        description as one more example of weight ``label_weight`` (None: all weigh 1)."""
        if self.label_support is None or self.label_weight <= 0:
            return self.support, self.support_targets, None
        named = (self.label_support.abs().sum(1) > 0).nonzero().flatten()
        support = torch.cat([self.support, self.label_support[named]])
        targets = torch.cat([self.support_targets, named])
        weights = torch.cat([torch.ones(len(self.support)),
                             torch.full((len(named),), self.label_weight)])
        return support, targets, weights

    def state_dict(self) -> Dict[str, torch.Tensor]:
        state = {"support": self.support, "support_targets": self.support_targets}
        if self.weights is not None:
            state["weights"] = self.weights
        if self.label_support is not None:
            state["label_support"] = self.label_support
            state["label_weight"] = torch.tensor(self.label_weight)
        return state

    def load_state(self, labels: List[str], state: Dict[str, torch.Tensor]) -> PrototypeHead:
        self.labels = list(labels)
        self.support = state["support"].float()
        self.support_targets = state["support_targets"].long()
        self.label_support, self.label_weight = None, 0.0
        if "label_support" in state:
            self.label_support = state["label_support"].float()
            self.label_weight = float(state["label_weight"])
            if tuple(self.label_support.shape) != (len(self.labels), self.support.shape[1]):
                raise ValueError(f"label support of shape {tuple(self.label_support.shape)}")
        self.prototypes = self._class_means()
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

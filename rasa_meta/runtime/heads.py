"""Heads over the encoder's unit vectors: prototypes (one mean per intent), mixture (one to
three prototypes per intent, where its examples form groups) or matching (attention over every
support example). All are fitted in closed form, no training loop."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

HEAD_TYPES = ("prototype", "matching", "mixture")
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
        self.weights = self._descend(
            self.prototypes, lambda support, vectors: support @ vectors.T / self.temperature,
            steps, learning_rate)
        return self

    def _descend(
        self,
        start: torch.Tensor,
        class_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        steps: int,
        learning_rate: float,
    ) -> torch.Tensor:
        """Adam from ``start`` on the (example-weighted) cross-entropy of
        ``class_logits(support, unit vectors)`` over the refine examples: the refinement every
        head that has class vectors shares. Returns the vectors, detached (not normalised)."""
        vectors = start.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([vectors], lr=learning_rate)
        support, targets, example_weights = self._refine_examples()
        with torch.enable_grad():
            for _ in range(steps):
                logits = class_logits(support, F.normalize(vectors, dim=-1))
                if example_weights is None:
                    loss = F.cross_entropy(logits, targets)
                else:
                    losses = F.cross_entropy(logits, targets, reduction="none")
                    loss = (losses * example_weights).sum() / example_weights.sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return vectors.detach()

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


# At most this many prototypes per intent, and at least two examples behind each.
MAX_COMPONENTS = 3
LLOYD_ITERATIONS = 10


def spherical_kmeans(
    points: torch.Tensor, k: int, iterations: int = LLOYD_ITERATIONS
) -> torch.Tensor:
    """(n,) cluster of each unit vector of ``points`` (at most ``k``, numbered from 0).

    No randomness, so the same examples always give the same clusters: the first centre is
    the point nearest the mean, each next one the point farthest from the centres so far
    (lowest best cosine; the first such on ties), then Lloyd iterations on cosine. A cluster
    left empty (duplicated points) is dropped, so fewer than ``k`` clusters may come back."""
    n = len(points)
    if k <= 1 or n <= 1:
        return torch.zeros(n, dtype=torch.long)
    chosen = [int((points @ F.normalize(points.sum(0), dim=0)).argmax())]
    closest = points @ points[chosen[0]]
    for _ in range(1, min(k, n)):
        chosen.append(int(closest.argmin()))
        closest = torch.maximum(closest, points @ points[chosen[-1]])
    centres = points[chosen]
    assign = (points @ centres.T).argmax(1)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        kept = torch.bincount(assign, minlength=len(centres)) > 0
        centres = F.normalize(sums[kept], dim=-1)
        new = (points @ centres.T).argmax(1)
        if bool(kept.all()) and torch.equal(new, assign):
            break
        assign = new
    return torch.unique(assign, return_inverse=True)[1]


def mixture_components(
    points: torch.Tensor,
    k: int,
    extra: Optional[torch.Tensor] = None,
    extra_weight: float = 0.0,
) -> torch.Tensor:
    """(k' <= k, dim) unit components of one intent: the normalised sums of its examples'
    :func:`spherical_kmeans` clusters; ``extra`` (its name or description, zero for none)
    joins the cluster nearest to it as ``extra_weight`` examples, as in :func:`class_means`."""
    assign = spherical_kmeans(points, k)
    n_clusters = int(assign.max()) + 1 if len(points) else 1
    sums = points.new_zeros(n_clusters, points.shape[1]).index_add_(0, assign, points)
    if extra is not None and extra_weight > 0 and bool(extra.abs().sum() > 0):
        nearest = int((F.normalize(sums, dim=-1) @ extra).argmax()) if len(points) else 0
        sums[nearest] += extra_weight * extra
    return F.normalize(sums, dim=-1)


def log_mean_exp_by_class(
    logits: torch.Tensor, targets: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """(n, n_classes) log of the mean of exp(``logits``) (n, components) over each class's
    components (``targets``: each component's class; every class has one). A class with one
    component gets its logit back exactly."""
    index = targets.unsqueeze(0).expand_as(logits)
    # the per-class maximum only keeps exp() in range; detached, it leaves the gradient alone
    top = logits.new_full((logits.shape[0], n_classes), float("-inf")).scatter_reduce(
        1, index, logits, reduce="amax", include_self=True).detach()
    sums = logits.new_zeros(logits.shape[0], n_classes).index_add(
        1, targets, torch.exp(logits - top[:, targets]))
    counts = torch.bincount(targets, minlength=n_classes).to(logits)
    return torch.log(sums) + top - torch.log(counts)


class MixtureHead(PrototypeHead):
    """One to three prototypes ("components") per intent, for intents whose examples form
    unrelated groups (a catch-all ``inform`` of entity values, ``out_of_scope``, FAQs), where
    one mean points between the groups.

    Components: :func:`spherical_kmeans` over the intent's examples (deterministic), its name
    or description joined to the nearest one. Class probability: softmax over intents of the
    log-mean-exp of the intent's components' cosine / temperature (an equal-weight mixture);
    with one component everywhere it is :class:`PrototypeHead`'s. ``similarities``: the
    nearest component. ``prototypes`` stay the plain per-intent means (the in-scope features
    and the leave-one-out calibration read those; the ``similarity`` in-scope rule, calibrated
    on them, reads the nearest component at prediction, so an intent split in two can look a
    little more in scope to it than its prototype would).

    **Choice of k, per intent, on the bot's own examples.** Candidates are k = 1 ..
    min(3, n // 2) for an intent with n examples (so under 4 examples: one). For each k,
    count how many of *all* the bot's examples are classified right when only this intent's
    representation is its k components and every other intent keeps its one prototype,
    scoring each example leave-one-out: an example of this intent against the intent's
    components re-clustered without it, an example of another intent against its own
    intent's prototype rebuilt without it (as the in-scope leave-one-out does). The k with
    the most right wins; ties go to the smaller k. The counts are kept in ``selection``.
    """

    kind = "mixture"

    def __init__(self, temperature: float = FALLBACK_TEMPERATURE) -> None:
        super().__init__(temperature)
        self.components = torch.zeros(0, 0)
        self.component_targets = torch.zeros(0, dtype=torch.long)
        self.component_weights: Optional[torch.Tensor] = None  # refined components, if any
        # intent -> {k: examples right with k components}, for intents that had a choice
        self.selection: Dict[str, Dict[int, int]] = {}

    def fit(
        self,
        embeddings: torch.Tensor,
        labels: Sequence[str],
        label_embeddings: Optional[Dict[str, torch.Tensor]] = None,
        label_weight: float = 0.0,
    ) -> MixtureHead:
        """Prototypes as :meth:`PrototypeHead.fit` builds them, then each intent's components
        (see the class docstring for the choice of k)."""
        super().fit(embeddings, labels, label_embeddings, label_weight)
        self.component_weights = None
        self._choose_components()
        return self

    @property
    def n_components(self) -> Dict[str, int]:
        """Intent -> its number of components."""
        counts = torch.bincount(self.component_targets, minlength=len(self.labels))
        return {label: int(n) for label, n in zip(self.labels, counts)}

    def _choose_components(self) -> None:
        emb, targets, t = self.support, self.support_targets, self.temperature
        # leave-one-out logits with one prototype per intent: what every candidate changes
        base = emb @ self.prototypes.T / t
        own = (emb * F.normalize(self.class_sums()[targets] - emb, dim=-1)).sum(1) / t
        base[torch.arange(len(targets)), targets] = own
        base_right = int((base.argmax(1) == targets).sum())
        components, owners = [], []
        self.selection = {}
        for c, label in enumerate(self.labels):
            chosen = self.prototypes[c:c + 1]
            idx = (targets == c).nonzero().flatten()
            extra = self.label_support[c] if self.label_support is not None else None
            rights = {1: base_right}
            for k in range(2, min(MAX_COMPONENTS, len(idx) // 2) + 1):
                full = mixture_components(emb[idx], k, extra, self.label_weight)
                column = torch.logsumexp(emb @ full.T / t, dim=1) - torch.log(
                    torch.tensor(float(len(full))))
                for j, i in enumerate(idx.tolist()):
                    rest = torch.cat([emb[idx[:j]], emb[idx[j + 1:]]])
                    loo = mixture_components(rest, k, extra, self.label_weight)
                    column[i] = torch.logsumexp(emb[i] @ loo.T / t, dim=0) - torch.log(
                        torch.tensor(float(len(loo))))
                scores = base.clone()
                scores[:, c] = column
                rights[k] = int((scores.argmax(1) == targets).sum())
                if rights[k] > max(v for key, v in rights.items() if key < k):
                    chosen = full
            if len(rights) > 1:
                self.selection[label] = rights
            components.append(chosen)
            owners += [c] * len(chosen)
        self.components = torch.cat(components) if components else torch.zeros(0, emb.shape[1])
        self.component_targets = torch.tensor(owners, dtype=torch.long)

    def _class_logits(self, queries: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
        return log_mean_exp_by_class(queries.float() @ components.T / self.temperature,
                                     self.component_targets, len(self.labels))

    def similarities(self, queries: torch.Tensor) -> torch.Tensor:
        """(n, classes) cosine similarity of each query to each intent's nearest component."""
        sims = queries.float() @ self.components.T
        out = torch.full((sims.shape[0], len(self.labels)), -1.0)
        index = self.component_targets.unsqueeze(0).expand_as(sims)
        return out.scatter_reduce(1, index, sims, reduce="amax", include_self=True)

    def predict_proba(self, queries: torch.Tensor) -> torch.Tensor:
        components = (self.components if self.component_weights is None
                      else F.normalize(self.component_weights, dim=-1))
        return torch.softmax(self._class_logits(queries, components), dim=-1)

    def refine(self, steps: int, learning_rate: float = 0.01) -> MixtureHead:
        """:meth:`PrototypeHead.refine` on the components: the same weighted cross-entropy,
        on the mixture's class logits. Similarities stay on the unrefined components."""
        if steps <= 0 or len(self.labels) < 2:
            return self
        self.component_weights = self._descend(self.components, self._class_logits, steps,
                                               learning_rate)
        return self

    def state_dict(self) -> Dict[str, torch.Tensor]:
        state = super().state_dict()
        state["components"] = self.components
        state["component_targets"] = self.component_targets
        if self.component_weights is not None:
            state["component_weights"] = self.component_weights
        return state

    def load_state(self, labels: List[str], state: Dict[str, torch.Tensor]) -> MixtureHead:
        super().load_state(labels, state)
        self.components = state["components"].float()
        self.component_targets = state["component_targets"].long()
        self.component_weights = (state["component_weights"].float()
                                  if "component_weights" in state else None)
        self.selection = {}
        shape = tuple(self.components.shape)
        if (len(shape) != 2 or shape[0] != len(self.component_targets)
                or shape[1] != self.support.shape[-1]):
            raise ValueError(f"mixture components of shape {shape}")
        owners = self.component_targets
        if len(owners) and (int(owners.min()) < 0 or int(owners.max()) >= len(self.labels)):
            raise ValueError("mixture component intents out of range")
        if len(self.labels) and int(torch.bincount(owners, minlength=len(self.labels)).min()) == 0:
            raise ValueError("an intent without a mixture component")
        weights = self.component_weights
        if weights is not None and tuple(weights.shape) != shape:
            raise ValueError(f"refined mixture components of shape {tuple(weights.shape)}")
        return self


def make_head(kind: str, temperature: float) -> PrototypeHead:
    if kind == "prototype":
        return PrototypeHead(temperature)
    if kind == "matching":
        return MatchingHead(temperature)
    if kind == "mixture":
        return MixtureHead(temperature)
    raise ValueError(f"Unknown head '{kind}', expected one of {HEAD_TYPES}.")

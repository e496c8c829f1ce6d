"""How meta-training turns one episode into a gradient for the slow (meta-trained) weights.

- ``episodic``: the episode loss at the current weights (prototypical networks and friends:
  what the shipped encoders were trained with).
- ``fomaml``: first-order MAML whose inner loop is the one `rasa train` runs. The episode's
  support is the bot: :func:`~rasa_meta.training.inner_loop.fast_adapt` adapts the weights
  to it in place (same episodes, blocks, steps, learning rate and loss as the component's
  defaults), the outer loss is the query loss at the adapted weights θ', and its gradient
  (first-order: taken at θ', as if θ' = θ + constant) is applied to θ.
- ``reptile``: the same inner loop; the meta-gradient is θ − θ' (the outer optimiser then
  moves θ towards the weights the bot would end up with).
- ``protomaml``: fomaml whose query loss goes through the head `rasa train` builds: a
  cosine classifier started at the prototypes (which depend on θ') and refined on the
  support (``head_steps``; the refinement itself is first-order, a constant offset).

The fast weights are the slow ones adapted in place and restored afterwards
(:class:`FastWeights`): nothing is copied but the parameter values.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rasa_meta.runtime.config import FewShotConfig
from rasa_meta.runtime.encoder import SentenceEncoder, set_trainable_layers
from rasa_meta.runtime.heads import PrototypeHead, class_means
from rasa_meta.runtime.label_text import name_text
from rasa_meta.training.episodes import Episode
from rasa_meta.training.inner_loop import fast_adapt, finetune_encoder
from rasa_meta.training.learner import MetaLearner
from rasa_meta.training.losses import episode_loss, uniformity_loss

META_ALGORITHMS = ("episodic", "fomaml", "reptile", "protomaml")

_COMPONENT = FewShotConfig()


@dataclass
class InnerLoop:
    """The inner loop `rasa train` runs (its defaults are the component's)."""

    epochs: int = _COMPONENT.epochs
    learning_rate: float = _COMPONENT.finetune_learning_rate
    train_layers: int = _COMPONENT.finetune_layers
    objective: str = _COMPONENT.finetune_objective
    seed: int = _COMPONENT.random_seed

    def adapt(
        self, encoder: SentenceEncoder, texts: Sequence[str], labels: Sequence[str],
        scale: float, seed: Optional[int] = None,
    ) -> List[str]:
        """Adapt ``encoder`` in place, in full precision (meta-gradients); no ``.grad`` of the
        inner steps is left behind."""
        with _own_rng(encoder):  # the outer loop's random stream stays as it was
            names = fast_adapt(
                encoder, texts, labels, self.epochs, self.learning_rate, self.train_layers,
                scale, self.seed if seed is None else seed, False, self.objective,
            )
        for p in encoder.model.parameters():
            p.grad = None
        return names

    def finetune(
        self, encoder: SentenceEncoder, texts: Sequence[str], labels: Sequence[str],
        scale: float,
    ) -> List[str]:
        """Exactly what `rasa train` does to ``encoder`` (float16-rounded, frozen after):
        validation after the inner loop."""
        with _own_rng(encoder):
            names = finetune_encoder(
                encoder, texts, labels, self.epochs, self.learning_rate, self.train_layers,
                scale, self.seed, False, self.objective,
            )
        for p in encoder.model.parameters():
            p.grad = None
        return names


def _own_rng(encoder: SentenceEncoder):
    """Random state the inner loop may reseed, restored afterwards (CPU, and its GPU)."""
    device = encoder.device
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class FastWeights:
    """The model's parameter values at creation (θ): adapt in place, read θ − θ', restore θ.

    Restoring copies the values only, so optimiser state, ``.grad`` and the parameters'
    identity (DistributedDataParallel's buckets) are untouched.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.slow = {n: p.detach().clone() for n, p in model.named_parameters()}

    def difference(self) -> Dict[str, torch.Tensor]:
        """θ − θ' for every parameter."""
        return {n: self.slow[n] - p.detach() for n, p in self.model.named_parameters()}

    def restore(self) -> None:
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(self.slow[n])


@dataclass
class OuterLoss:
    """The loss on an episode's queries (at the current, or adapted, weights)."""

    objective: str = "prototypical"
    contrastive_temperature: float = 0.07
    uniformity_weight: float = 0.0
    head_steps: int = 0  # > 0: through a refined prototype head (protomaml)
    head_learning_rate: float = _COMPONENT.head_learning_rate
    # > 0: the episode's intent names, embedded by the encoder being trained, join their
    # prototypes as this many examples (the component's label_name_weight), so the encoder
    # learns to place a name near its examples
    label_name_weight: float = 0.0

    def __call__(
        self, module: nn.Module, encoder: SentenceEncoder, episode: Episode[str],
        autocast: bool = False,
    ) -> torch.Tensor:
        device = encoder.device
        named = episode_name_texts(episode) if self.label_name_weight > 0 else {}
        texts = list(episode.support) + list(episode.query)
        batch = encoder.tokenize(texts + list(named.values()))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            emb, scale = module(batch)
        n_s, n_q = len(episode.support), len(episode.query)
        names = None
        if named:  # (n_way, dim), zero rows for classes whose name has no words
            names = emb.new_zeros(episode.n_way, emb.shape[1])
            names = names.index_copy(0, torch.tensor(list(named), device=device), emb[n_s + n_q:])
        emb = emb[:n_s + n_q]
        s_t, q_t = episode.support_targets.to(device), episode.query_targets.to(device)
        if self.head_steps > 0:
            return refined_head_loss(
                emb[:n_s], s_t, emb[n_s:], q_t, scale, episode.support_labels,
                self.head_steps, self.head_learning_rate, names, self.label_name_weight,
            ) + self.uniformity_weight * uniformity_loss(emb)
        return episode_loss(
            self.objective, emb[:n_s], s_t, emb[n_s:], q_t, scale,
            self.contrastive_temperature, self.uniformity_weight, names,
            self.label_name_weight,
        )


def episode_name_texts(episode: Episode[str]) -> Dict[int, str]:
    """Class index -> the words of its name, for the episode's classes whose name has any."""
    return {i: text for i, text in enumerate(name_text(c) for c in episode.classes) if text}


def refined_head_loss(
    support: torch.Tensor,
    support_targets: torch.Tensor,
    query: torch.Tensor,
    query_targets: torch.Tensor,
    scale: torch.Tensor,
    support_labels: Sequence[str],
    head_steps: int,
    head_learning_rate: float,
    names: Optional[torch.Tensor] = None,
    name_weight: float = 0.0,
) -> torch.Tensor:
    """Query cross-entropy through the head `rasa train` builds (ProtoMAML, Triantafillou et
    al. 2020): class vectors started at the prototypes and refined on the support by
    :meth:`PrototypeHead.refine`. The prototypes keep their gradient; the refinement's
    offset is a constant (first-order). ``names``: the classes' embedded names (rows in
    target order, zero for none) as support of weight ``name_weight``, as the head takes
    them."""
    n_classes = int(support_targets.max()) + 1
    prototypes = class_means(support, support_targets, n_classes, names, name_weight)
    class_names = _class_order(support_labels, support_targets)
    label_embeddings = None
    if names is not None and name_weight > 0:
        label_embeddings = {class_names[i]: names[i].detach() for i in range(n_classes)
                            if bool(names[i].abs().sum() > 0)}
    head = PrototypeHead(1.0 / float(scale.detach())).fit(
        support.detach(), support_labels, label_embeddings, name_weight)
    head.refine(head_steps, head_learning_rate)
    # the head orders its classes by name; the episode's targets index its own order
    order = [head.labels.index(label) for label in class_names]
    refined = head.weights[order] if head.weights is not None else head.prototypes[order]
    weights = prototypes + (refined.to(prototypes.device) - prototypes.detach())
    logits = scale * query @ F.normalize(weights, dim=-1).T
    return F.cross_entropy(logits, query_targets)


def _class_order(labels: Sequence[str], targets: torch.Tensor) -> List[str]:
    """The class name of each target index."""
    names: Dict[int, str] = {}
    for label, t in zip(labels, targets.tolist()):
        names.setdefault(t, label)
    return [names[t] for t in range(len(names))]


def episodic_gradient(
    module: nn.Module, learner: MetaLearner, episode: Episode[str], loss: OuterLoss,
    autocast: bool = False,
) -> float:
    """``.grad`` of the slow weights: the episode loss at the current weights."""
    value = loss(module, learner.encoder, episode, autocast)
    value.backward()
    return value.item()


def fomaml_gradient(
    module: nn.Module, learner: MetaLearner, episode: Episode[str], loss: OuterLoss,
    inner: InnerLoop, trainable_layers: int, seed: int, autocast: bool = False,
) -> float:
    """``.grad`` of the slow weights: the query loss's gradient at the weights the inner loop
    reaches on the support (first-order MAML). Returns that post-adaptation query loss."""
    encoder = learner.encoder
    fast = FastWeights(encoder.model)
    inner.adapt(encoder, episode.support, episode.support_labels,
                learner.log_scale.exp().item(), seed)
    set_trainable_layers(encoder.model, trainable_layers)  # the slow weights' trainable set
    learner.train()
    value = loss(module, encoder, episode, autocast)
    value.backward()
    fast.restore()
    return value.item()


def reptile_gradient(
    module: nn.Module, learner: MetaLearner, episode: Episode[str], loss: OuterLoss,
    inner: InnerLoop, trainable_layers: int, seed: int, autocast: bool = False,
) -> float:
    """``.grad`` of the slow weights: θ − θ', θ' the inner loop's result on the support
    (Reptile, Nichol et al. 2018). The similarity scale is not adapted by the inner loop, so
    it gets no gradient. Returns the post-adaptation query loss (measured, not descended)."""
    encoder = learner.encoder
    fast = FastWeights(encoder.model)
    inner.adapt(encoder, episode.support, episode.support_labels,
                learner.log_scale.exp().item(), seed)
    with torch.no_grad():
        learner.train()
        value = loss(module, encoder, episode, autocast).item()
    difference = fast.difference()
    fast.restore()
    set_trainable_layers(encoder.model, trainable_layers)
    for name, p in encoder.model.named_parameters():
        if p.requires_grad:
            p.grad = difference[name].to(p.dtype)
    return value


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Mean ``.grad`` over the processes of a distributed run (meta-gradients set by hand do
    not pass DistributedDataParallel's hooks)."""
    world = torch.distributed.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


def adapted_episode_accuracy(
    encoder: SentenceEncoder, episodes: Sequence[Episode[str]], inner: InnerLoop, scale: float
) -> float:
    """Nearest-prototype accuracy on each episode's queries after the inner loop `rasa train`
    runs on its support (a fresh adaptation per episode; the weights are restored after)."""
    correct = total = 0
    fast = FastWeights(encoder.model)
    for ep in episodes:
        inner.finetune(encoder, ep.support, ep.support_labels, scale)
        s = encoder.encode(list(ep.support), batch_size=128)
        q = encoder.encode(list(ep.query), batch_size=128)
        pred = (q @ class_means(s, ep.support_targets, ep.n_way).T).argmax(1)
        correct += int((pred == ep.query_targets).sum())
        total += len(ep.query)
        fast.restore()
    return correct / max(total, 1)


def adapted_corpus_accuracy(
    encoder: SentenceEncoder, train_texts: Sequence[str], train_labels: Sequence[str],
    test_texts: Sequence[str], test_labels: Sequence[str], inner: InnerLoop, scale: float,
) -> float:
    """Nearest-prototype accuracy on ``test`` (full label set) after the inner loop on
    ``train``, as a bot with these examples gets it; the weights are restored after."""
    from rasa_meta.runtime.heads import label_index

    fast = FastWeights(encoder.model)
    inner.finetune(encoder, train_texts, train_labels, scale)
    names, targets = label_index(train_labels)
    protos = class_means(encoder.encode(list(train_texts), batch_size=128), targets, len(names))
    pred = (encoder.encode(list(test_texts), batch_size=128) @ protos.T).argmax(1).tolist()
    fast.restore()
    return sum(names[p] == gold for p, gold in zip(pred, test_labels)) / max(len(test_labels), 1)


def inner_loop_seed(seed: int, rank: int, step: int) -> int:
    """The inner loop's seed for one meta-training step: every episode adapts with its own
    dropout and support halves, reproducibly."""
    return random.Random(f"{seed}/{rank}/{step}").randrange(2**31)

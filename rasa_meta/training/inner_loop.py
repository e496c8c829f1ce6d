"""Inner loop: brief episodic fine-tuning of the encoder on one bot's own examples.

The meta-trained encoder is the starting point (the outer loop's result); the inner loop
takes a few first-order steps on episodes built from the bot's intents, the way first-order
MAML adapts to a new task, and returns the names of the parameters it changed so only those
are stored with the bot's model.
"""

from __future__ import annotations

import random
from typing import List, Sequence

import torch

from rasa_meta.runtime.encoder import SentenceEncoder, set_trainable_layers, transformer_layers
from rasa_meta.runtime.model import FewShotConfig
from rasa_meta.runtime.progress import progress
from rasa_meta.training.episodes import Episode, build_episode, epoch_ways, group_by_label, halves
from rasa_meta.training.learner import (
    MetaLearner,
    cosine_schedule,
    make_optimizer,
    optimizer_step,
)
from rasa_meta.training.losses import episode_loss

# The component's defaults, so that calling the inner loop directly runs what `rasa train` runs.
_COMPONENT = FewShotConfig()


def bot_episodes(
    labels: Sequence[str], rng: random.Random, n_way: int = 16, max_per_class: int = 8
) -> List[Episode[int]]:
    """One epoch of episodes over every intent: each intent appears once per epoch, its
    examples (indices into ``labels``) split at random into support and query halves
    (intents with a single example only join as extra contrastive negatives)."""
    groups = group_by_label(range(len(labels)), labels)
    split = halves(max_per_class)
    return [build_episode(groups, ways, split, rng) for ways in epoch_ways(groups, n_way, rng)]


def finetune_encoder(
    encoder: SentenceEncoder,
    texts: Sequence[str],
    labels: Sequence[str],
    epochs: int = _COMPONENT.epochs,
    learning_rate: float = _COMPONENT.finetune_learning_rate,
    train_layers: int = _COMPONENT.finetune_layers,
    init_scale: float = 20.0,
    seed: int = _COMPONENT.random_seed,
    show_progress: bool = True,
    objective: str = _COMPONENT.finetune_objective,
) -> List[str]:
    """Fine-tune ``encoder`` in place; returns the names of the parameters that changed.

    ``train_layers`` top transformer blocks are trained (-1: all blocks). The token embeddings
    always stay frozen: a bot's few hundred examples touch a handful of their rows, and
    leaving them out keeps the stored delta to the blocks. The changed weights are rounded to
    float16, the precision they are stored in, so the reloaded model predicts exactly what
    the trained one did.
    """
    names = fast_adapt(
        encoder, texts, labels, epochs, learning_rate, train_layers, init_scale, seed,
        show_progress, objective,
    )
    if names:
        encoder.eval()
        params = dict(encoder.model.named_parameters())
        with torch.no_grad():
            for name in names:
                params[name].copy_(params[name].half().to(params[name].dtype))
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    return names


def fast_adapt(
    encoder: SentenceEncoder,
    texts: Sequence[str],
    labels: Sequence[str],
    epochs: int = _COMPONENT.epochs,
    learning_rate: float = _COMPONENT.finetune_learning_rate,
    train_layers: int = _COMPONENT.finetune_layers,
    init_scale: float = 20.0,
    seed: int = _COMPONENT.random_seed,
    show_progress: bool = False,
    objective: str = _COMPONENT.finetune_objective,
) -> List[str]:
    """The inner loop's descent, as :func:`finetune_encoder` runs it, without the rounding to
    storage precision: in place, in full precision, the trained blocks left requiring grad.
    Returns the names of the parameters it trained ([] when there is nothing to adapt).

    Meta-training adapts its fast weights with it (``training/meta_algorithms.py``): the same
    episodes, blocks, steps, learning rate, schedule and loss as `rasa train`.
    """
    if train_layers < 0:
        train_layers = len(transformer_layers(encoder.model))
    names = set_trainable_layers(encoder.model, train_layers)
    if epochs <= 0 or len(set(labels)) < 2 or not names:
        return []
    rng = random.Random(seed)
    torch.manual_seed(seed)
    learner = MetaLearner(encoder, init_scale)
    learner.log_scale.requires_grad_(False)
    params = [p for p in encoder.model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, learning_rate)
    plan = [ep for _ in range(epochs) for ep in bot_episodes(labels, rng)]
    scheduler = cosine_schedule(optimizer, len(plan))
    device = encoder.device
    learner.train()
    for ep in progress(plan, desc="adapting encoder", disable=not show_progress):
        batch = encoder.tokenize([texts[i] for i in ep.support + ep.query])
        emb, scale = learner(batch)
        n_s = len(ep.support)
        loss = episode_loss(
            # an episode of single-example intents has no queries: only pairs to contrast
            objective if ep.query else "contrastive",
            emb[:n_s], ep.support_targets.to(device),
            emb[n_s:], ep.query_targets.to(device),
            scale,
        )
        optimizer_step(loss, optimizer, scheduler, params)
    return names

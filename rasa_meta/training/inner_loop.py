"""Inner loop: brief episodic fine-tuning of the encoder on one bot's own examples.

The meta-trained encoder is the starting point (the outer loop's result); the inner loop
takes a few first-order steps on episodes built from the bot's intents, the way first-order
MAML adapts to a new task, and returns the names of the parameters it changed so only those
are stored with the bot's model.
"""

from __future__ import annotations

import random
from typing import Dict, List, Sequence

import torch

from rasa_meta.runtime.encoder import SentenceEncoder, set_trainable_layers, transformer_layers
from rasa_meta.runtime.model import FewShotConfig
from rasa_meta.runtime.progress import progress
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
) -> List[Dict[str, List[int]]]:
    """One epoch of episodes over every intent: each intent appears once per epoch, its
    examples split at random into support and query halves (intents with a single example
    only join as extra contrastive negatives)."""
    groups: Dict[str, List[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    intents = sorted(groups)
    rng.shuffle(intents)
    episodes = []
    for start in range(0, len(intents), n_way):
        support: List[int] = []
        query: List[int] = []
        s_t: List[int] = []
        q_t: List[int] = []
        for target, intent in enumerate(intents[start : start + n_way]):
            idx = rng.sample(groups[intent], min(len(groups[intent]), max_per_class))
            half = max(1, len(idx) // 2)
            support += idx[:half]
            s_t += [target] * half
            query += idx[half:]
            q_t += [target] * (len(idx) - half)
        episodes.append({"support": support, "query": query, "s_t": s_t, "q_t": q_t})
    return episodes


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
    if train_layers < 0:
        train_layers = len(transformer_layers(encoder.model))
    names = set_trainable_layers(encoder.model, train_layers)
    if epochs <= 0 or len(set(labels)) < 2 or not names:
        for p in encoder.model.parameters():
            p.requires_grad_(False)
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
        order = ep["support"] + ep["query"]
        batch = encoder.tokenize([texts[i] for i in order])
        emb, scale = learner(batch)
        n_s = len(ep["support"])
        loss = episode_loss(
            # an episode of single-example intents has no queries: only pairs to contrast
            objective if ep["query"] else "contrastive",
            emb[:n_s], torch.tensor(ep["s_t"], device=device),
            emb[n_s:], torch.tensor(ep["q_t"], device=device),
            scale,
        )
        optimizer_step(loss, optimizer, scheduler, params)
    encoder.eval()
    with torch.no_grad():
        for p in params:
            p.copy_(p.half().to(p.dtype))
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    return names

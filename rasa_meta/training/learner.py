"""What the outer loop (meta-training) and the inner loop (`rasa train`) share: the learner
that embeds an episode, the optimiser and its schedule, and one optimisation step."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rasa_meta.runtime.encoder import SentenceEncoder

MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.01


class MetaLearner(nn.Module):
    """The encoder plus the learnable similarity scale of the prototypical loss."""

    def __init__(self, encoder: SentenceEncoder, init_scale: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unit embeddings of a tokenised batch and the similarity scale (returned from forward
        so that DistributedDataParallel sees the scale take part in the step)."""
        emb = F.normalize(self.encoder.pool(batch).float(), dim=-1)
        return emb, self.log_scale.exp()


def make_optimizer(params: Iterable[nn.Parameter], learning_rate: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(list(params), lr=learning_rate, weight_decay=WEIGHT_DECAY)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps`` (none for 0), then cosine decay to zero at
    ``total_steps``."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        decay = 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        return warm * max(0.0, decay)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: Iterable[nn.Parameter],
) -> None:
    """Backpropagate ``loss``, clip the gradient norm of ``params``, step and schedule."""
    params = list(params)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    apply_gradients(optimizer, scheduler, params)


def apply_gradients(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    params: Iterable[nn.Parameter],
) -> None:
    """Clip the gradient norm of ``params`` (their ``.grad``, however it was computed: a
    backward pass, or a meta-gradient set by hand), step and schedule."""
    torch.nn.utils.clip_grad_norm_(list(params), MAX_GRAD_NORM)
    optimizer.step()
    scheduler.step()

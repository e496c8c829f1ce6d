"""Episodic meta-training of the sentence encoder.

Each step samples an N-way K-shot episode from the meta-train intents, embeds support and
query, and descends the prototypical and/or supervised-contrastive loss. Every
``eval_every`` steps the encoder is scored on fixed episodes over held-out (class-disjoint)
intents; the best state is kept and training stops when it no longer improves.

Multi-GPU: launch with ``torchrun --nproc_per_node=G -m rasa_meta.tooling.cli meta-train ...``; each
process samples its own episodes and gradients are averaged by DistributedDataParallel.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rasa_meta import __version__
from rasa_meta.runtime.device import resolve_device
from rasa_meta.runtime.encoder import (
    BASE_ENCODER,
    SentenceEncoder,
    save_checkpoint,
    set_trainable_layers,
    trainable_state,
)
from rasa_meta.runtime.heads import class_means, label_index
from rasa_meta.training.arguments import arg as _arg
from rasa_meta.training.corpus import (
    META_TRAINING_CORPORA,
    IntentCorpus,
    corpus_family,
    corpus_licences,
    few_shot_task,
    leave_out,
    load_corpus,
)
from rasa_meta.training.episodes import Episode, EpisodeSampler, split_classes
from rasa_meta.training.learner import (
    MetaLearner,
    cosine_schedule,
    make_optimizer,
    optimizer_step,
)
from rasa_meta.training.losses import OBJECTIVES, episode_loss
from rasa_meta.training.metrics import accuracy

logger = logging.getLogger(__name__)


@dataclass
class MetaTrainingArguments:
    """Everything that defines a meta-training run (recorded in the checkpoint).

    The ``rasa-meta meta-train`` flags are generated from these fields.
    """

    output_dir: str = _arg("runs/meta-encoder", "Where the checkpoint is written.")
    base_model: str = _arg(BASE_ENCODER, "Encoder to start from (HF name or directory).")
    prompt: Optional[str] = _arg(
        None, "Text put before every text: a prompt name the base model declares, or the text "
        "itself (default: the base model's default prompt). Recorded in the checkpoint."
    )
    corpora: List[str] = _arg(
        META_TRAINING_CORPORA,
        "Registered corpus names, split folders or Rasa NLU YAML files.",
    )
    exclude: List[str] = _arg(
        [], "Datasets left out: their whole family, and related domains of other corpora "
        "(BANKING77 also drops CLINC150's banking and credit_cards)."
    )
    objective: str = _arg("prototypical", "Episode objective.", choices=OBJECTIVES)
    episodes: int = _arg(1000, "Training episodes (steps).")
    n_way: int = _arg(10, "Intents per episode; 0 takes every intent of the drawn corpus.")
    k_shot: int = _arg(5, "Support examples per intent.")
    q_query: int = _arg(5, "Query examples per intent.")
    learning_rate: float = _arg(3e-5, "Peak learning rate (warm-up, then cosine decay).")
    train_layers: int = _arg(
        -1, "Top transformer blocks trained; -1 trains everything, embeddings included."
    )
    uniformity_weight: float = _arg(
        0.0, "Weight of the uniformity (isotropy) regulariser over each episode's embeddings."
    )
    seed: int = _arg(0, "Seed of episodes, splits and initialisation.")
    device: str = _arg("auto", "auto, cpu, cuda or cuda:N.")
    mixed_precision: bool = _arg(True, "bf16 autocast on CUDA.")
    max_length: int = _arg(64, "Tokens per text.")
    domain_prob: float = _arg(0.5, "Chance that an episode's intents share one domain.")
    valid_fraction: float = _arg(0.2, "Share of each corpus's intents held out as meta-valid.")
    valid_episodes: int = _arg(40, "Fixed meta-valid episodes.")
    valid_n_way: int = _arg(0, "Intents per meta-valid episode; 0: all of the corpus's.")
    valid_corpus: Optional[str] = _arg(
        None, "A corpus left out of meta-training whose valid split (with valid_shots "
        "examples per intent from train) picks the best step instead of meta-valid."
    )
    valid_shots: int = _arg(10, "Examples per intent for valid_corpus.")
    keep_last: bool = _arg(
        False, "Keep the final state instead of the best-scoring one (a step count chosen "
        "beforehand, e.g. from leave-one-out folds, where no held-out corpus is left)."
    )
    scorer_episodes: int = _arg(
        300, "Episodes of the in-scope scorer trained on the same corpora after meta-training "
        "(its out-of-scope score; 0: none, the component then uses the similarity rule)."
    )
    eval_every: int = _arg(100, "Steps between meta-valid evaluations.")
    patience: int = _arg(4, "Evaluations without improvement before stopping.")
    init_scale: float = _arg(20.0, "Initial similarity scale of the prototypical loss.")
    contrastive_temperature: float = _arg(0.07, "Temperature of the contrastive loss.")
    save_delta: bool = _arg(False, "Write only the trained parameters (float16) over base.")
    data_root: Optional[str] = _arg(None, "Folder holding the corpora.")

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got '{self.objective}'.")
        if self.episodes < 1 or self.eval_every < 1:
            raise ValueError("episodes and eval_every must be positive.")
        if self.uniformity_weight < 0:
            raise ValueError("uniformity_weight must be >= 0.")
        if self.valid_corpus and corpus_family(self.valid_corpus).upper() not in {
            corpus_family(e).upper() for e in self.exclude
        }:
            raise ValueError(
                f"valid_corpus '{self.valid_corpus}' must be left out of meta-training: add it "
                f"to exclude."
            )


@dataclass
class MetaTrainingResult:
    output_dir: Path
    best_valid_accuracy: float
    best_step: int
    steps: int
    seconds: float
    history: List[Dict[str, float]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def episode_accuracy(encoder: SentenceEncoder, episodes: List[Episode]) -> float:
    """Nearest-prototype accuracy on episodes, each distinct text embedded once."""
    texts = sorted({t for ep in episodes for t in ep.support_texts + ep.query_texts})
    emb = encoder.encode(texts, batch_size=128)
    row = {t: i for i, t in enumerate(texts)}
    correct = total = 0
    for ep in episodes:
        s = emb[[row[t] for t in ep.support_texts]]
        q = emb[[row[t] for t in ep.query_texts]]
        pred = (q @ class_means(s, ep.support_targets, ep.n_way).T).argmax(1)
        correct += int((pred == ep.query_targets).sum())
        total += len(ep.query_texts)
    return correct / max(total, 1)


def nearest_centroid_accuracy(
    encoder: SentenceEncoder, train: IntentCorpus, test: IntentCorpus
) -> float:
    """Accuracy of plain prototypes built from ``train`` on ``test`` (full label set)."""
    names, targets = label_index(train.labels)
    protos = class_means(encoder.encode(train.texts, batch_size=128), targets, len(names))
    pred = (encoder.encode(test.texts, batch_size=128) @ protos.T).argmax(1)
    return accuracy(test.labels, [names[p] for p in pred.tolist()])


def load_meta_corpora(args: MetaTrainingArguments) -> List[IntentCorpus]:
    """The corpora named in ``args``, minus the excluded datasets (see :func:`leave_out`)."""
    root = Path(args.data_root) if args.data_root else None
    loaded = [load_corpus(spec, root) for spec in args.corpora]
    corpora = leave_out(loaded, args.exclude)
    for corpus in loaded:
        if corpus.name not in {c.name for c in corpora}:
            logger.info("Leaving %s out of meta-training.", corpus.name)
    if not corpora:
        raise ValueError("No corpus left for meta-training after --exclude.")
    return corpora


def meta_train(
    args: MetaTrainingArguments, corpora: Optional[List[IntentCorpus]] = None
) -> MetaTrainingResult:
    """Run episodic meta-training and write the best checkpoint to ``args.output_dir``."""
    args.validate()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        rank = torch.distributed.get_rank()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local_rank}" if backend == "nccl" else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        device = resolve_device(args.device)
    seed_everything(args.seed + rank)

    corpora = corpora if corpora is not None else load_meta_corpora(args)
    splits = [split_classes(c, args.valid_fraction, args.seed) for c in corpora]
    train_sampler = EpisodeSampler(
        [tr for tr, _ in splits], args.n_way, args.k_shot, args.q_query,
        seed=args.seed + rank, domain_prob=args.domain_prob,
    )
    valid_n_way = args.valid_n_way
    valid_sampler = EpisodeSampler(
        [va for _, va in splits], valid_n_way, args.k_shot, args.q_query,
        seed=args.seed + 10_000, domain_prob=args.domain_prob,
    )
    valid_episodes = valid_sampler.take(args.valid_episodes)

    encoder = SentenceEncoder.from_pretrained(
        args.base_model, max_length=args.max_length, prompt=args.prompt
    )
    encoder.to(device)
    trained_names = set_trainable_layers(encoder.model, args.train_layers)
    learner = MetaLearner(encoder, args.init_scale).to(device)
    module: nn.Module = learner
    if distributed:
        module = nn.parallel.DistributedDataParallel(
            learner,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=args.train_layers < 0,
        )
    params = [p for p in learner.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, args.learning_rate)
    scheduler = cosine_schedule(optimizer, args.episodes, warmup_steps=max(1, args.episodes // 20))
    autocast = args.mixed_precision and device.type == "cuda"

    out_dir = Path(args.output_dir)
    history: List[Dict[str, float]] = []
    corpus_task = None
    if args.valid_corpus:
        corpus_task = few_shot_task(
            args.valid_corpus, str(args.valid_shots), args.seed,
            Path(args.data_root) if args.data_root else None, test_split="valid",
        )

    def evaluate(step: int, loss: float) -> float:
        """Record meta-valid (and the held-out corpus's valid) accuracy; return the one that
        picks the best step."""
        entry = {"step": step, "loss": loss,
                 "valid_accuracy": episode_accuracy(encoder, valid_episodes)}
        if corpus_task is not None:
            entry["corpus_valid_accuracy"] = nearest_centroid_accuracy(encoder, *corpus_task)
        history.append(entry)
        return entry.get("corpus_valid_accuracy", entry["valid_accuracy"])

    best_acc = evaluate(0, float("nan"))
    best_step, best_state, best_scale = 0, None, learner.log_scale.exp().item()
    bad_evals = 0
    running = None
    start = time.perf_counter()
    bar = tqdm(range(1, args.episodes + 1), desc="meta-train", disable=rank != 0)
    step = 0
    for step in bar:
        learner.train()
        ep = train_sampler.sample()
        batch = encoder.tokenize(ep.support_texts + ep.query_texts)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            emb, scale = module(batch)
        n_s = len(ep.support_texts)
        loss = episode_loss(
            args.objective,
            emb[:n_s], ep.support_targets.to(device),
            emb[n_s:], ep.query_targets.to(device),
            scale, args.contrastive_temperature, args.uniformity_weight,
        )
        optimizer_step(loss, optimizer, scheduler, params)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % args.eval_every == 0 or step == args.episodes:
            acc = evaluate(step, running) if rank == 0 else 0.0
            if acc > best_acc or (args.keep_last and step == args.episodes):
                best_acc, best_step, bad_evals = acc, step, 0
                best_state = trainable_state(encoder.model, trained_names)
                best_scale = learner.log_scale.exp().item()
            else:
                bad_evals += 1
            bar.set_postfix(loss=f"{running:.3f}", valid=f"{acc:.3f}", best=f"{best_acc:.3f}")
            stop = torch.tensor(
                float(bad_evals >= args.patience and not args.keep_last), device=device
            )
            if distributed:
                torch.distributed.broadcast(stop, 0)
            if stop.item():
                logger.info("Early stop at step %d (best %.4f at %d).", step, best_acc, best_step)
                break
    seconds = time.perf_counter() - start

    if rank == 0:
        if best_state is not None:
            with torch.no_grad():
                named = dict(encoder.model.named_parameters())
                for name, value in best_state.items():
                    named[name].copy_(value.to(device))
        encoder.to("cpu")
        meta = {
            "rasa_meta_version": __version__,
            "command": " ".join(["rasa-meta", *sys.argv[1:]])
            if Path(sys.argv[0]).name == "rasa-meta"
            else " ".join(sys.argv),
            "base_model": args.base_model,
            "corpora": [c.name for c in corpora],
            "excluded": list(args.exclude),
            "corpus_licences": corpus_licences([c.name for c in corpora]),
            "objective": args.objective,
            "steps": step,
            "best_step": best_step,
            "seed": args.seed,
            "meta_valid_accuracy": next(
                h["valid_accuracy"] for h in history if h["step"] == best_step
            ),
            "selected_on": f"{args.valid_corpus}/valid {args.valid_shots}-shot"
            if args.valid_corpus else "meta-valid",
            "selection_accuracy": best_acc,
            "meta_valid_episodes": f"{args.valid_episodes}x "
            f"{valid_n_way or 'all-intents'}-way {args.k_shot}-shot",
            "similarity_scale": best_scale,
            "train_seconds": round(seconds, 1),
            "arguments": asdict(args),
            "history": history,
        }
        save_checkpoint(
            encoder, out_dir, meta, delta_names=trained_names if args.save_delta else None
        )
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        if args.scorer_episodes > 0:
            _train_in_scope_scorer(args, out_dir, corpora)
    if distributed:
        torch.distributed.destroy_process_group()
    return MetaTrainingResult(out_dir, best_acc, best_step, step, seconds, history)


def _train_in_scope_scorer(
    args: MetaTrainingArguments, out_dir: Path, corpora: List[IntentCorpus]
) -> None:
    """Meta-train the checkpoint's in-scope scorer on the corpora it was trained on."""
    from rasa_meta.training.in_scope import train_scorer

    encoder = SentenceEncoder.from_pretrained(str(out_dir))
    try:
        scorer, history = train_scorer(encoder, corpora, args.scorer_episodes, seed=args.seed)
    except ValueError as e:
        logger.warning("No in-scope scorer trained: %s", e)
        return
    scorer.trained_on["exclude"] = list(args.exclude)
    scorer.save(out_dir)
    (out_dir / "in_scope_scorer_history.json").write_text(json.dumps(history, indent=1))

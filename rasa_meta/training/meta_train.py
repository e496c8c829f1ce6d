"""Episodic meta-training of the sentence encoder.

Each step samples an N-way K-shot episode from the meta-train intents and turns it into a
gradient for the encoder (``meta_algorithm``: the episode loss at the current weights, or the
query loss after the inner loop `rasa train` runs: see ``training/meta_algorithms.py``).
Every ``eval_every`` steps the encoder is scored on fixed episodes over held-out
(class-disjoint) intents, and on a held-out corpus's valid split if one is named; the best
state is kept and training stops when it no longer improves.

The run is assembled from small parts: :func:`start_process` (device, distributed set-up),
:func:`make_samplers`, :func:`make_learner`, :class:`Validation`, :class:`EarlyStopping`,
:func:`checkpoint_metadata`; :func:`meta_train` wires them together. The command that started
a run is recorded by its caller (``command=``: the ``rasa-meta`` command line passes it).

Multi-GPU: launch with ``torchrun --nproc_per_node=G -m rasa_meta.tooling.cli meta-train ...``; each
process samples its own episodes and gradients are averaged (DistributedDataParallel for the
episodic loss, an all-reduce of the meta-gradients otherwise).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rasa_meta import __version__
from rasa_meta.runtime.config import OBJECTIVES, FewShotConfig
from rasa_meta.runtime.device import resolve_device
from rasa_meta.runtime.encoder import (
    BASE_ENCODER,
    SentenceEncoder,
    save_checkpoint,
    set_trainable_layers,
    trainable_state,
)
from rasa_meta.runtime.heads import class_means, label_index
from rasa_meta.training.arguments import arg
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
from rasa_meta.training.learner import MetaLearner, apply_gradients, cosine_schedule, make_optimizer
from rasa_meta.training.meta_algorithms import (
    META_ALGORITHMS,
    InnerLoop,
    OuterLoss,
    adapted_corpus_accuracy,
    adapted_episode_accuracy,
    average_gradients,
    episodic_gradient,
    fomaml_gradient,
    inner_loop_seed,
    reptile_gradient,
)
from rasa_meta.training.metrics import accuracy

logger = logging.getLogger(__name__)

_COMPONENT = FewShotConfig()


@dataclass
class MetaTrainingArguments:
    """Everything that defines a meta-training run (recorded in the checkpoint).

    The ``rasa-meta meta-train`` flags are generated from these fields.
    """

    output_dir: str = arg("runs/meta-encoder", "Where the checkpoint is written.")
    base_model: str = arg(BASE_ENCODER, "Encoder to start from (HF name or directory).")
    prompt: Optional[str] = arg(
        None, "Text put before every text: a prompt name the base model declares, or the text "
        "itself (default: the base model's default prompt). Recorded in the checkpoint."
    )
    corpora: List[str] = arg(
        META_TRAINING_CORPORA,
        "Registered corpus names, split folders or Rasa NLU YAML files.",
    )
    exclude: List[str] = arg(
        [], "Datasets left out: their whole family, and related domains of other corpora "
        "(BANKING77 also drops CLINC150's banking and credit_cards)."
    )
    objective: str = arg(
        "prototypical", "Episode loss (with fomaml/reptile/protomaml: on the query after the "
        "inner loop).", choices=OBJECTIVES,
    )
    meta_algorithm: str = arg(
        "episodic", "How an episode updates the encoder. episodic: the episode loss at the "
        "current weights (the shipped encoders' recipe). fomaml: run the inner loop `rasa "
        "train` runs (--inner-* flags, the component's defaults) on the episode's support, "
        "descend the query loss at the adapted weights (first-order MAML). reptile: the same "
        "inner loop, then move towards the adapted weights. protomaml: fomaml with the query "
        "loss through the refined prototype head `rasa train` builds.",
        choices=META_ALGORITHMS,
    )
    inner_epochs: int = arg(
        _COMPONENT.epochs, "Inner loop epochs (the component's `epochs`), for fomaml, reptile, "
        "protomaml and --valid-after-inner-loop."
    )
    inner_layers: int = arg(
        _COMPONENT.finetune_layers, "Inner loop blocks (`finetune_layers`; -1: all)."
    )
    inner_learning_rate: float = arg(
        _COMPONENT.finetune_learning_rate, "Inner loop learning rate (`finetune_learning_rate`)."
    )
    inner_objective: str = arg(
        _COMPONENT.finetune_objective, "Inner loop loss (`finetune_objective`).",
        choices=OBJECTIVES,
    )
    episodes: int = arg(1000, "Training episodes (steps).")
    n_way: int = arg(10, "Intents per episode; 0 takes every intent of the drawn corpus.")
    k_shot: int = arg(5, "Support examples per intent.")
    q_query: int = arg(5, "Query examples per intent.")
    learning_rate: float = arg(3e-5, "Peak learning rate (warm-up, then cosine decay).")
    train_layers: int = arg(
        -1, "Top transformer blocks trained; -1 trains everything, embeddings included."
    )
    uniformity_weight: float = arg(
        0.0, "Weight of the uniformity (isotropy) regulariser over each episode's embeddings."
    )
    label_name_weight: float = arg(
        0.0, "Each episode's intent names (their words, as the component reads them) join "
        "their prototypes as this many examples, embedded by the encoder being trained, so it "
        "learns to place a name near its examples (the component's label_name_weight); 0: "
        "off. Validation scores plain prototypes either way."
    )
    seed: int = arg(0, "Seed of episodes, splits and initialisation.")
    device: str = arg("auto", "auto, cpu, cuda or cuda:N.")
    mixed_precision: bool = arg(True, "bf16 autocast on CUDA.")
    max_length: int = arg(64, "Tokens per text.")
    domain_prob: float = arg(0.5, "Chance that an episode's intents share one domain.")
    valid_fraction: float = arg(0.2, "Share of each corpus's intents held out as meta-valid.")
    valid_episodes: int = arg(40, "Fixed meta-valid episodes.")
    valid_n_way: int = arg(0, "Intents per meta-valid episode; 0: all of the corpus's.")
    valid_corpus: Optional[str] = arg(
        None, "A corpus left out of meta-training whose valid split (with valid_shots "
        "examples per intent from train) picks the best step instead of meta-valid."
    )
    valid_shots: int = arg(10, "Examples per intent for valid_corpus.")
    valid_after_inner_loop: bool = arg(
        False, "Also score validation after the inner loop `rasa train` runs (on each "
        "meta-valid episode's support; on valid_corpus's shots) and pick the best step on "
        "that: what a bot gets. Slower evaluations."
    )
    keep_last: bool = arg(
        False, "Keep the final state instead of the best-scoring one (a step count chosen "
        "beforehand, e.g. from leave-one-out folds, where no held-out corpus is left)."
    )
    scorer_episodes: int = arg(
        300, "Episodes of the in-scope scorer trained on the same corpora after meta-training "
        "(its out-of-scope score; 0: none, the component then uses the similarity rule)."
    )
    eval_every: int = arg(100, "Steps between meta-valid evaluations.")
    patience: int = arg(4, "Evaluations without improvement before stopping.")
    init_scale: float = arg(20.0, "Initial similarity scale of the prototypical loss.")
    contrastive_temperature: float = arg(0.07, "Temperature of the contrastive loss.")
    save_delta: bool = arg(False, "Write only the trained parameters (float16) over base.")
    data_root: Optional[str] = arg(None, "Folder holding the corpora.")

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got '{self.objective}'.")
        if self.meta_algorithm not in META_ALGORITHMS:
            raise ValueError(
                f"meta_algorithm must be one of {META_ALGORITHMS}, got '{self.meta_algorithm}'."
            )
        if self.inner_objective not in OBJECTIVES:
            raise ValueError(
                f"inner_objective must be one of {OBJECTIVES}, got '{self.inner_objective}'."
            )
        if self.meta_algorithm != "episodic" and self.inner_epochs < 1:
            raise ValueError(f"{self.meta_algorithm} needs inner_epochs >= 1.")
        if self.episodes < 1 or self.eval_every < 1:
            raise ValueError("episodes and eval_every must be positive.")
        if self.uniformity_weight < 0 or self.label_name_weight < 0:
            raise ValueError("uniformity_weight and label_name_weight must be >= 0.")
        if self.valid_corpus and corpus_family(self.valid_corpus).upper() not in {
            corpus_family(e).upper() for e in self.exclude
        }:
            raise ValueError(
                f"valid_corpus '{self.valid_corpus}' must be left out of meta-training: add it "
                f"to exclude."
            )

    def inner_loop(self) -> InnerLoop:
        return InnerLoop(self.inner_epochs, self.inner_learning_rate, self.inner_layers,
                         self.inner_objective)

    def outer_loss(self) -> OuterLoss:
        return OuterLoss(
            self.objective, self.contrastive_temperature, self.uniformity_weight,
            head_steps=_COMPONENT.head_steps if self.meta_algorithm == "protomaml" else 0,
            label_name_weight=self.label_name_weight,
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


# ---------------------------------------------------------------------------------- set-up


@dataclass
class Process:
    """Where this process trains: its rank among ``world_size`` and its device."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_process(device: str) -> Process:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else resolve
    ``device``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Process(resolve_device(device))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    process = Process(
        torch.device(f"cuda:{local_rank}" if backend == "nccl" else "cpu"),
        torch.distributed.get_rank(), world_size,
    )
    if process.device.type == "cuda":
        torch.cuda.set_device(process.device)
    return process


def end_process(process: Process) -> None:
    if process.distributed:
        torch.distributed.destroy_process_group()


def make_samplers(
    args: MetaTrainingArguments, corpora: List[IntentCorpus], rank: int = 0
) -> Tuple[EpisodeSampler, List[Episode[str]]]:
    """The training episode sampler (its own seed per process) over the meta-train intents,
    and the fixed meta-valid episodes over the held-out intents."""
    splits = [split_classes(c, args.valid_fraction, args.seed) for c in corpora]
    train = EpisodeSampler(
        [tr for tr, _ in splits], args.n_way, args.k_shot, args.q_query,
        seed=args.seed + rank, domain_prob=args.domain_prob,
    )
    valid = EpisodeSampler(
        [va for _, va in splits], args.valid_n_way, args.k_shot, args.q_query,
        seed=args.seed + 10_000, domain_prob=args.domain_prob,
    )
    return train, valid.take(args.valid_episodes)


@dataclass
class Training:
    """The encoder being meta-trained, its learner, optimiser and schedule."""

    encoder: SentenceEncoder
    learner: MetaLearner
    module: nn.Module  # the learner, or its DistributedDataParallel wrapper
    trained_names: List[str]
    params: List[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @property
    def scale(self) -> float:
        return self.learner.log_scale.exp().item()


def make_learner(args: MetaTrainingArguments, process: Process) -> Training:
    """Load the base encoder, choose its trained blocks, wrap it for distributed training."""
    encoder = SentenceEncoder.from_pretrained(
        args.base_model, max_length=args.max_length, prompt=args.prompt
    )
    encoder.to(process.device)
    trained_names = set_trainable_layers(encoder.model, args.train_layers)
    learner = MetaLearner(encoder, args.init_scale).to(process.device)
    module: nn.Module = learner
    # meta-gradients are averaged by hand (average_gradients); the episodic loss through DDP
    if process.distributed and args.meta_algorithm == "episodic":
        module = nn.parallel.DistributedDataParallel(
            learner,
            device_ids=[process.device.index] if process.device.type == "cuda" else None,
            find_unused_parameters=args.train_layers < 0,
        )
    params = [p for p in learner.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, args.learning_rate)
    scheduler = cosine_schedule(optimizer, args.episodes, warmup_steps=max(1, args.episodes // 20))
    return Training(encoder, learner, module, trained_names, params, optimizer, scheduler)


# ------------------------------------------------------------------------------------ step

StepFunction = Callable[[Training, Episode[str], int], float]


def make_step(args: MetaTrainingArguments, process: Process) -> StepFunction:
    """One training step of ``args.meta_algorithm``: the episode's gradient into the slow
    weights' ``.grad`` (averaged over processes), then clip, step and schedule. Returns the
    loss it descended (post-adaptation for fomaml/reptile/protomaml)."""
    loss = args.outer_loss()
    inner = args.inner_loop()
    autocast = args.mixed_precision and process.device.type == "cuda"

    def step(training: Training, episode: Episode[str], index: int) -> float:
        training.learner.train()
        training.optimizer.zero_grad(set_to_none=True)
        if args.meta_algorithm == "episodic":
            value = episodic_gradient(training.module, training.learner, episode, loss, autocast)
        else:
            gradient = reptile_gradient if args.meta_algorithm == "reptile" else fomaml_gradient
            value = gradient(
                training.module, training.learner, episode, loss, inner, args.train_layers,
                inner_loop_seed(args.seed, process.rank, index), autocast,
            )
            if process.distributed:
                average_gradients(training.params)
        apply_gradients(training.optimizer, training.scheduler, training.params)
        return value

    return step


# -------------------------------------------------------------------------------- evaluate


def episode_accuracy(encoder: SentenceEncoder, episodes: List[Episode[str]]) -> float:
    """Nearest-prototype accuracy on episodes, each distinct text embedded once."""
    texts = sorted({t for ep in episodes for t in ep.support + ep.query})
    emb = encoder.encode(texts, batch_size=128)
    row = {t: i for i, t in enumerate(texts)}
    correct = total = 0
    for ep in episodes:
        s = emb[[row[t] for t in ep.support]]
        q = emb[[row[t] for t in ep.query]]
        pred = (q @ class_means(s, ep.support_targets, ep.n_way).T).argmax(1)
        correct += int((pred == ep.query_targets).sum())
        total += len(ep.query)
    return correct / max(total, 1)


def nearest_centroid_accuracy(
    encoder: SentenceEncoder, train: IntentCorpus, test: IntentCorpus
) -> float:
    """Accuracy of plain prototypes built from ``train`` on ``test`` (full label set)."""
    names, targets = label_index(train.labels)
    protos = class_means(encoder.encode(train.texts, batch_size=128), targets, len(names))
    pred = (encoder.encode(test.texts, batch_size=128) @ protos.T).argmax(1)
    return accuracy(test.labels, [names[p] for p in pred.tolist()])


class Validation:
    """The scores recorded at each evaluation, and the one that picks the best step.

    Always meta-valid (nearest prototype on the fixed episodes); with a valid corpus its valid
    split; with ``valid_after_inner_loop`` both again after the inner loop `rasa train` runs.
    The last of these recorded picks the step.
    """

    def __init__(self, args: MetaTrainingArguments, episodes: List[Episode[str]]) -> None:
        self.args = args
        self.episodes = episodes
        self.inner = args.inner_loop() if args.valid_after_inner_loop else None
        self.corpus_task = None
        if args.valid_corpus:
            self.corpus_task = few_shot_task(
                args.valid_corpus, str(args.valid_shots), args.seed,
                Path(args.data_root) if args.data_root else None, test_split="valid",
            )

    @property
    def selection_key(self) -> str:
        corpus = self.corpus_task is not None
        if self.inner is not None:
            return "corpus_valid_adapted_accuracy" if corpus else "valid_adapted_accuracy"
        return "corpus_valid_accuracy" if corpus else "valid_accuracy"

    def describe(self) -> str:
        where = (f"{self.args.valid_corpus}/valid {self.args.valid_shots}-shot"
                 if self.corpus_task is not None else "meta-valid")
        return where + (", after the inner loop" if self.inner is not None else "")

    def __call__(self, training: Training, step: int, loss: float) -> Dict[str, float]:
        encoder = training.encoder
        entry = {"step": step, "loss": loss, "valid_accuracy": episode_accuracy(
            encoder, self.episodes)}
        if self.corpus_task is not None:
            entry["corpus_valid_accuracy"] = nearest_centroid_accuracy(encoder, *self.corpus_task)
        if self.inner is not None:
            entry["valid_adapted_accuracy"] = adapted_episode_accuracy(
                encoder, self.episodes, self.inner, training.scale)
            if self.corpus_task is not None:
                train, test = self.corpus_task
                entry["corpus_valid_adapted_accuracy"] = adapted_corpus_accuracy(
                    encoder, train.texts, train.labels, test.texts, test.labels, self.inner,
                    training.scale)
            set_trainable_layers(encoder.model, self.args.train_layers)  # the inner loop froze it
        return entry


# -------------------------------------------------------------------------- early stopping


@dataclass
class EarlyStopping:
    """Keeps the best-scoring state; stops after ``patience`` evaluations without
    improvement (never with ``keep_last``, which keeps the final state instead)."""

    patience: int
    keep_last: bool = False
    best_score: float = float("-inf")
    best_step: int = 0
    best_state: Optional[Dict[str, torch.Tensor]] = None
    best_scale: float = 0.0
    bad_evals: int = 0

    def update(self, training: Training, step: int, score: float, last: bool) -> bool:
        """Record an evaluation; True if it is the new best (its state is kept)."""
        if step == 0 or score > self.best_score or (self.keep_last and last):
            self.best_score, self.best_step, self.bad_evals = score, step, 0
            self.best_state = trainable_state(training.encoder.model, training.trained_names)
            self.best_scale = training.scale
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience and not self.keep_last

    def restore_best(self, training: Training) -> None:
        """Put the best state back into the encoder: the start's when nothing beat it, so a
        checkpoint whose best step is 0 holds the weights it started from."""
        if self.best_state is None:
            return
        with torch.no_grad():
            named = dict(training.encoder.model.named_parameters())
            for name, value in self.best_state.items():
                named[name].copy_(value.to(named[name].device))


def _agreed(flag: bool, process: Process) -> bool:
    """The main process's decision, on every process."""
    value = torch.tensor(float(flag), device=process.device)
    if process.distributed:
        torch.distributed.broadcast(value, 0)
    return bool(value.item())


# ------------------------------------------------------------------------------ checkpoint


def checkpoint_metadata(
    args: MetaTrainingArguments,
    corpora: List[IntentCorpus],
    command: Optional[str],
    steps: int,
    stopping: EarlyStopping,
    validation: Validation,
    history: List[Dict[str, float]],
    seconds: float,
) -> Dict:
    """What the checkpoint records about its run (``rasa_meta.json``)."""
    meta = {
        "rasa_meta_version": __version__,
        "command": command,
        "base_model": args.base_model,
        "corpora": [c.name for c in corpora],
        "excluded": list(args.exclude),
        "corpus_licences": corpus_licences([c.name for c in corpora]),
        "objective": args.objective,
        "meta_algorithm": args.meta_algorithm,
        "steps": steps,
        "best_step": stopping.best_step,
        "seed": args.seed,
        "meta_valid_accuracy": next(
            h["valid_accuracy"] for h in history if h["step"] == stopping.best_step
        ),
        "selected_on": validation.describe(),
        "selection_accuracy": stopping.best_score,
        "meta_valid_episodes": f"{args.valid_episodes}x "
        f"{args.valid_n_way or 'all-intents'}-way {args.k_shot}-shot",
        "similarity_scale": stopping.best_scale,
        "train_seconds": round(seconds, 1),
        "arguments": asdict(args),
        "history": history,
    }
    if args.meta_algorithm != "episodic" or args.valid_after_inner_loop:
        meta["inner_loop"] = asdict(args.inner_loop())
    return meta


def write_checkpoint(
    args: MetaTrainingArguments, training: Training, meta: Dict, corpora: List[IntentCorpus]
) -> Path:
    """The encoder (whole, or the delta of its trained blocks), its metadata and history, and
    the in-scope scorer trained for it."""
    out_dir = Path(args.output_dir)
    training.encoder.to("cpu")
    save_checkpoint(
        training.encoder, out_dir, meta,
        delta_names=training.trained_names if args.save_delta else None,
    )
    (out_dir / "history.json").write_text(json.dumps(meta["history"], indent=1))
    if args.scorer_episodes > 0:
        _train_in_scope_scorer(args, out_dir, corpora)
    return out_dir


# --------------------------------------------------------------------------------- the run


def meta_train(
    args: MetaTrainingArguments,
    corpora: Optional[List[IntentCorpus]] = None,
    command: Optional[str] = None,
) -> MetaTrainingResult:
    """Run meta-training and write the best checkpoint to ``args.output_dir``.

    ``command`` is recorded in the checkpoint as the command that made it (the ``rasa-meta``
    command line passes its own; library callers may pass theirs).
    """
    args.validate()
    process = start_process(args.device)
    seed_everything(args.seed + process.rank)
    corpora = corpora if corpora is not None else load_meta_corpora(args)
    train_sampler, valid_episodes = make_samplers(args, corpora, process.rank)
    training = make_learner(args, process)
    step_fn = make_step(args, process)
    validation = Validation(args, valid_episodes)
    stopping = EarlyStopping(args.patience, args.keep_last)
    history: List[Dict[str, float]] = []

    def evaluate(step: int, loss: float) -> float:
        """Record the scores on the main process; the selection score (0 elsewhere)."""
        if not process.is_main:
            return 0.0
        history.append(validation(training, step, loss))
        return history[-1][validation.selection_key]

    stopping.update(training, 0, evaluate(0, float("nan")), last=False)
    running = None
    start = time.perf_counter()
    bar = tqdm(range(1, args.episodes + 1), desc="meta-train", disable=not process.is_main)
    step = 0
    for step in bar:
        value = step_fn(training, train_sampler.sample(), step)
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % args.eval_every == 0 or step == args.episodes:
            score = evaluate(step, running)
            stopping.update(training, step, score, last=step == args.episodes)
            bar.set_postfix(loss=f"{running:.3f}", valid=f"{score:.3f}",
                            best=f"{stopping.best_score:.3f}")
            if _agreed(stopping.should_stop, process):
                logger.info("Early stop at step %d (best %.4f at %d).", step,
                            stopping.best_score, stopping.best_step)
                break
    seconds = time.perf_counter() - start

    out_dir = Path(args.output_dir)
    if process.is_main:
        stopping.restore_best(training)
        meta = checkpoint_metadata(args, corpora, command, step, stopping, validation,
                                   history, seconds)
        write_checkpoint(args, training, meta, corpora)
    end_process(process)
    return MetaTrainingResult(out_dir, stopping.best_score, stopping.best_step, step, seconds,
                              history)


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

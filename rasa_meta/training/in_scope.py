"""Meta-training the in-scope scorer: episodes with held-out intents as pseudo out-of-scope.

Each episode is a simulated bot: some intents of one corpus with K examples each. Its queries
are other examples of those intents (label 1 when the head predicts them right), examples of
the corpus's intents the bot was not given (near out-of-scope) and examples from another
corpus (far out-of-scope), both label 0. The scorer (``rasa_meta.runtime.in_scope``) is fitted
on the features of all episodes, each episode weighing the same and, inside it, in-scope and
out-of-scope queries weighing half each. It then transfers to a new bot with no OOS data.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from rasa_meta.runtime.in_scope import FEATURES, MONOTONE, BotStatistics, InScopeScorer
from rasa_meta.runtime.in_scope import in_scope_features as compute_features
from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel, encoder_temperature
from rasa_meta.runtime.progress import progress
from rasa_meta.training.arguments import arg
from rasa_meta.training.corpus import META_TRAINING_CORPORA, leave_out, load_corpus
from rasa_meta.training.embedding_cache import cached_encode
from rasa_meta.training.episodes import build_episode, shuffled_shots
from rasa_meta.training.metrics import auroc

logger = logging.getLogger(__name__)

@dataclass
class ScorerTrainingArguments:
    """A scorer training run; the ``rasa-meta train-scorer`` flags are generated from it."""

    encoder: str = arg("default", "Encoder directory the scorer is trained for and saved in.")
    output_dir: str = arg("", "Where in_scope_scorer.json is written (default: --encoder).")
    corpora: List[str] = arg(META_TRAINING_CORPORA, "Corpora the episodes are drawn from.")
    exclude: List[str] = arg([], "Datasets left out, as for meta-training.")
    episodes: int = arg(600, "Simulated bots; a fifth are held out to report meta-valid.")
    max_per_intent: int = arg(40, "Examples encoded per intent.")
    seed: int = arg(0, "Seed of the example draw and the episodes.")
    data_root: str = arg("", "Folder of the corpora (default: RASA_META_DATA or ../shared/data).")
    cache_dir: str = arg("", "Cache of corpus embeddings (none if empty).")


# Intent embeddings of one corpus: intent → (n, d) unit vectors.
CorpusEmbeddings = Dict[str, torch.Tensor]


@dataclass
class ScorerEpisode:
    """Features and targets of one simulated bot's queries."""

    features: torch.Tensor  # (q, len(FEATURES))
    correct: torch.Tensor  # (q,) 1.0 for in-scope queries predicted right, else 0.0
    in_scope: torch.Tensor  # (q,) bool


@dataclass
class ScorerBot:
    """A simulated bot drawn for the scorer: its examples and the queries it is asked."""

    support: torch.Tensor  # (n, d) the bot's examples
    labels: List[str]  # their intents
    queries: torch.Tensor  # (q, d) other examples of those intents
    query_labels: List[str]
    out_of_scope: torch.Tensor  # (o, d) intents it was not given, and another corpus's


def draw_scorer_bot(
    corpora: Dict[str, CorpusEmbeddings],
    rng: random.Random,
    shots: Sequence[int] = (5, 10, 20),
    queries_per_intent: int = 4,
    max_intents: int = 300,
) -> Optional[ScorerBot]:
    """One simulated bot from ``corpora`` (None if the drawn corpora are too small).

    A bot covers one corpus's domain, or (half the time) several corpora's: bots with many
    intents (150 and more) must be seen too, and no single corpus has that many. Some of the
    drawn intents are held out (near out-of-scope); each kept intent's examples are split by
    the episode builder (:func:`~rasa_meta.training.episodes.shuffled_shots`).
    """
    names = sorted(corpora)
    n_corpora = 1 if rng.random() < 0.5 or len(names) < 3 else rng.randint(2, len(names) - 1)
    chosen = rng.sample(names, n_corpora)
    pool = {f"{c}/{i}": corpora[c][i] for c in chosen for i in corpora[c]}
    intents = sorted(pool)
    rng.shuffle(intents)
    if len(intents) < 4:
        return None
    n_held = max(1, round(len(intents) * rng.uniform(0.1, 0.4)))
    held_out, kept = intents[:n_held], intents[n_held:]
    kept = kept[: rng.randint(min(5, len(kept)), min(max_intents, len(kept)))]
    k = rng.choice(list(shots))
    rows = {intent: range(len(pool[intent])) for intent in kept}
    episode = build_episode(rows, kept, shuffled_shots(k, queries_per_intent), rng)
    if episode.n_way < 2 or not episode.query:
        return None
    near = [pool[i][:queries_per_intent] for i in held_out]
    others = [c for c in corpora if c not in chosen]
    far: List[torch.Tensor] = []
    if others:
        other = torch.cat(list(corpora[rng.choice(others)].values()))
        n_far = min(len(other), sum(len(x) for x in near))
        far = [other[torch.tensor(rng.sample(range(len(other)), n_far))]]
    return ScorerBot(
        support=_rows(pool, episode.support_labels, episode.support),
        labels=episode.support_labels,
        queries=_rows(pool, episode.query_labels, episode.query),
        query_labels=episode.query_labels,
        out_of_scope=torch.cat(near + far),
    )


def _rows(pool: CorpusEmbeddings, labels: Sequence[str], rows: Sequence[int]) -> torch.Tensor:
    return torch.stack([pool[lab][r] for lab, r in zip(labels, rows)])


def sample_scorer_episode(
    corpora: Dict[str, CorpusEmbeddings],
    rng: random.Random,
    config: FewShotConfig,
    temperature: float,
    shots: Sequence[int] = (5, 10, 20),
    queries_per_intent: int = 4,
    max_intents: int = 300,
    target: str = "correct",
) -> Optional[ScorerEpisode]:
    """One simulated bot from ``corpora`` and its queries' features (None if the drawn
    corpus is too small)."""
    bot = draw_scorer_bot(corpora, rng, shots, queries_per_intent, max_intents)
    if bot is None:
        return None
    model = FewShotIntentModel(
        # names off: the episode's embeddings come from the corpora, its labels are theirs
        FewShotConfig(**{**config.__dict__, "temperature": temperature,
                         "out_of_scope_detection": "similarity", "label_name_weight": 0.0})
    )
    model.fit_embeddings(bot.support, bot.labels, [""] * len(bot.labels))
    head = model.head
    stats = BotStatistics.of(head)
    pred = head.predict_proba(bot.queries).argmax(1)
    gold = torch.tensor([head.labels.index(lab) for lab in bot.query_labels])
    n_in, n_oos = len(bot.queries), len(bot.out_of_scope)
    return ScorerEpisode(
        features=torch.cat([compute_features(head, bot.queries, stats),
                            compute_features(head, bot.out_of_scope, stats)]),
        correct=torch.cat([
            (pred == gold).float() if target == "correct" else torch.ones(n_in),
            torch.zeros(n_oos),
        ]),
        in_scope=torch.cat([torch.ones(n_in, dtype=torch.bool),
                            torch.zeros(n_oos, dtype=torch.bool)]),
    )


def episode_weights(episodes: Sequence[ScorerEpisode]) -> torch.Tensor:
    """Per-query weights: every episode sums to 1, half on in-scope queries, half on OOS."""
    out = []
    for ep in episodes:
        w = torch.zeros(len(ep.correct))
        n_in, n_oos = int(ep.in_scope.sum()), int((~ep.in_scope).sum())
        if n_in:
            w[ep.in_scope] = 0.5 / n_in
        if n_oos:
            w[~ep.in_scope] = 0.5 / n_oos
        out.append(w / len(episodes))
    return torch.cat(out)


def fit_scorer(
    episodes: Sequence[ScorerEpisode],
    steps: int = 500,
    learning_rate: float = 0.05,
    trained_on: Optional[Dict[str, object]] = None,
) -> Tuple[InScopeScorer, List[float]]:
    """Fit the monotone logistic scorer on the episodes' queries; returns it and the losses."""
    x = torch.cat([ep.features for ep in episodes])
    y = torch.cat([ep.correct for ep in episodes])
    w = episode_weights(episodes)
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-4)
    xs = (x - mean) / scale
    raw = torch.zeros(len(FEATURES), requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([raw, bias], lr=learning_rate)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            logits = xs @ _constrained(raw) + bias
            loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    scorer = InScopeScorer(
        weights=_constrained(raw.detach()).tolist(), bias=float(bias.detach()),
        mean=mean.tolist(), scale=scale.tolist(), trained_on=dict(trained_on or {}),
    )
    return scorer, losses


def _constrained(raw: torch.Tensor) -> torch.Tensor:
    """The first MONOTONE weights through softplus (never negative), the rest as they are."""
    return torch.cat([F.softplus(raw[:MONOTONE]), raw[MONOTONE:]])


def embed_corpora(
    encoder, corpora: Sequence, max_per_intent: int, seed: int, cache_dir: Optional[str] = None
) -> Dict[str, CorpusEmbeddings]:
    """Encode at most ``max_per_intent`` examples of every intent of every corpus."""
    rng = random.Random(seed)
    out: Dict[str, CorpusEmbeddings] = {}
    for corpus in progress(corpora, desc="encoding corpora"):
        texts, labels = [], []
        for intent, examples in sorted(corpus.by_intent().items()):
            chosen = examples if len(examples) <= max_per_intent else rng.sample(
                examples, max_per_intent)
            texts += chosen
            labels += [intent] * len(chosen)
        emb = cached_encode(encoder, texts, cache_dir)
        per: Dict[str, List[int]] = {}
        for i, lab in enumerate(labels):
            per.setdefault(lab, []).append(i)
        out[corpus.name] = {lab: emb[idx] for lab, idx in per.items() if len(idx) >= 2}
    return out


def train_scorer(
    encoder,
    corpora: Sequence,
    episodes: int = 600,
    max_per_intent: int = 40,
    seed: int = 0,
    cache_dir: Optional[str] = None,
    config: Optional[FewShotConfig] = None,
    target: str = "correct",
) -> Tuple[InScopeScorer, Dict[str, object]]:
    """Meta-train a scorer for ``encoder`` over episodes drawn from ``corpora``."""
    config = config or FewShotConfig(epochs=0)
    embeddings = embed_corpora(encoder, corpora, max_per_intent, seed, cache_dir)
    temperature = config.temperature or encoder_temperature(encoder.metadata)
    rng = random.Random(seed)
    sampled: List[ScorerEpisode] = []
    attempts = 0
    with progress(total=episodes, desc="scorer episodes") as bar:
        while len(sampled) < episodes and attempts < 20 * episodes:
            attempts += 1
            ep = sample_scorer_episode(embeddings, rng, config, temperature, target=target)
            if ep is not None:
                sampled.append(ep)
                bar.update(1)
    if len(sampled) < 10:
        raise ValueError(
            "Too few intents to train the in-scope scorer: it needs corpora with at least 4 "
            "intents of 2+ examples each."
        )
    # a fifth of the episodes actually drawn (a small corpus yields fewer than requested)
    n_valid = max(1, len(sampled) // 5)
    scorer, losses = fit_scorer(
        sampled[n_valid:],
        trained_on={"corpora": sorted(embeddings), "episodes": len(sampled) - n_valid,
                    "seed": seed},
    )
    history = {
        "train_loss": [losses[0], losses[-1]],
        "meta_valid": scorer_quality(scorer, sampled[:n_valid]),
        "weights": dict(zip(FEATURES, scorer.weights)),
    }
    return scorer, history


def scorer_quality(scorer: InScopeScorer, episodes: Sequence[ScorerEpisode]) -> Dict[str, float]:
    """Weighted log loss and mean per-episode AUROC (in-scope vs OOS) on held-out episodes."""
    x = torch.cat([ep.features for ep in episodes])
    y = torch.cat([ep.correct for ep in episodes])
    w = episode_weights(episodes)
    p = scorer(x).clamp(1e-6, 1 - 1e-6)
    loss = float((-(y * p.log() + (1 - y) * (1 - p).log()) * w).sum())
    aurocs = []
    for ep in episodes:
        s = scorer(ep.features)
        if ep.in_scope.any() and (~ep.in_scope).any():
            aurocs.append(auroc(s[ep.in_scope].tolist(), s[~ep.in_scope].tolist()))
    return {"log_loss": loss, "auroc": float(sum(aurocs) / max(len(aurocs), 1)),
            "episodes": len(episodes)}


def run_scorer_training(args: ScorerTrainingArguments) -> Dict[str, object]:
    """Train a scorer as ``args`` say and save it beside the encoder (or in ``output_dir``)."""
    from rasa_meta.runtime.encoder import SentenceEncoder, resolve_encoder

    start = time.perf_counter()
    root = Path(args.data_root) if args.data_root else None
    corpora = leave_out([load_corpus(c, root) for c in args.corpora], args.exclude)
    if not corpora:
        raise ValueError("No corpus left to train the in-scope scorer on after --exclude.")
    encoder_dir = resolve_encoder(args.encoder)
    encoder = SentenceEncoder.from_pretrained(encoder_dir)
    scorer, history = train_scorer(
        encoder, corpora, args.episodes, args.max_per_intent, args.seed, args.cache_dir or None
    )
    scorer.trained_on.update({"exclude": list(args.exclude), "arguments": asdict(args)})
    output = Path(args.output_dir or encoder_dir)
    output.mkdir(parents=True, exist_ok=True)
    scorer.save(output)
    history["seconds"] = round(time.perf_counter() - start, 1)
    # the history sits beside the scorer: the file's name, never a path of this machine
    # (a shipped encoder's history would carry its build folder)
    history["output"] = "in_scope_scorer.json"
    (output / "in_scope_scorer_history.json").write_text(json.dumps(history, indent=1))
    return history

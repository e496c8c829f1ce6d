"""``rasa-meta inbox``: what real users said that the bot did not handle, grouped by meaning.

The loop: read the user messages of a time window from the bot's tracker store
(:mod:`rasa_meta.tooling.inbox_traffic`), re-parse them with the trained model (the same
MetaIntentClassifier and FallbackClassifier ``rasa run`` loads, batched), cluster those that
fell back or had low confidence with the bot's own encoder, list confident predictions that
disagree with their nearest training examples (:mod:`rasa_meta.tooling.inbox_groups`), and
write a report, ``inbox.json`` and a draft of NLU data to edit and merge
(:mod:`rasa_meta.tooling.inbox_report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from rasa_meta.runtime.retrieval import DELIMITER
from rasa_meta.tooling.bot_model import BotModel, ParsedTexts, find_model, load_bot_model  # noqa: F401
from rasa_meta.tooling.inbox_groups import (
    DEFAULT_LINKAGE,
    DEFAULT_MAX_CLUSTER_POINTS,
    DEFAULT_MIN_CLUSTER_SIZE,
    DEFAULT_SCALE_FACTOR,
    EXISTING_QUANTILE,
    candidate_name,
    cluster_embeddings,
    intent_scale,
    intent_spread,
    prototypes,
    review_confident,
    summarise_clusters,
)
from rasa_meta.tooling.inbox_report import write_reports
from rasa_meta.tooling.inbox_traffic import (  # noqa: F401
    DistinctTexts,
    InboxError,
    Traffic,
    distinct_texts,
    parse_time,
    read_traffic,
)

logger = logging.getLogger(__name__)

# Answered messages below this confidence (or the FallbackClassifier threshold, if higher)
# count as unsure and are clustered with the fallbacks; chosen with the clustering on held-out
# intents (docs/results/inbox/inbox_clustering.json).
DEFAULT_LOW_CONFIDENCE = 0.7
DEFAULT_OUTPUT_DIR = "results/inbox"


@dataclass
class InboxOptions:
    """Arguments of ``rasa-meta inbox``."""

    endpoints: Path = Path("endpoints.yml")
    model: Optional[str] = None  # a .tar.gz, a folder of them (newest), None: ./models
    output_dir: Path = Path(DEFAULT_OUTPUT_DIR)
    since: Optional[str] = None
    until: Optional[str] = None
    low_confidence: Optional[float] = None  # None: DEFAULT_LOW_CONFIDENCE or the threshold
    distance_threshold: Optional[float] = None  # None: scale_factor x the bot's intent scale
    scale_factor: float = DEFAULT_SCALE_FACTOR
    linkage: str = DEFAULT_LINKAGE
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE
    max_examples: int = 20
    max_cluster_points: int = DEFAULT_MAX_CLUSTER_POINTS
    batch_size: int = 256
    progress: bool = True


# The name Rasa's own templates and most bots give their intent for out-of-scope messages.
OUT_OF_SCOPE_INTENT = "out_of_scope"


def unhandled_mask(parsed: ParsedTexts, low: float,
                   out_of_scope_intent: Optional[str] = None) -> np.ndarray:
    """Texts the bot did not handle: it fell back, was unsure (confidence below ``low``), or
    answered with its out-of-scope intent (``out_of_scope_intent``, else ``out_of_scope``):
    a message that intent takes is one the bot has no answer for, however sure it is."""
    name = out_of_scope_intent or OUT_OF_SCOPE_INTENT
    out_of_scope = np.array([bool(i) and (i == name or i.startswith(name + DELIMITER))
                             for i in parsed.intent], dtype=bool)
    return parsed.fell_back | (parsed.confidence < low) | out_of_scope


def traffic_share(model: Any, parsed: ParsedTexts, distinct: DistinctTexts,
                  threshold: Optional[float]) -> Dict[str, Any]:
    """The out-of-scope share of the messages and the threshold for it, as ``rasa-meta
    calibrate`` reports them (every message counted, repeats included); ``error`` says why
    there is none."""
    from rasa_meta.tooling.calibrate import CalibrationError, logits_from_embeddings, share_report

    try:
        z, _ = logits_from_embeddings(model, parsed.embeddings)
        return share_report(model, np.repeat(z, distinct.counts), current_threshold=threshold)
    except CalibrationError as e:
        return {"error": str(e)}


def run_inbox(options: InboxOptions) -> Dict[str, Any]:
    """Read, parse, group and write the reports; returns the ``inbox.json`` content."""

    started = time.perf_counter()
    since, until = parse_time(options.since), parse_time(options.until)
    if options.distance_threshold is not None and not 0 < options.distance_threshold < 2:
        raise InboxError("--distance-threshold is a cosine distance between 0 and 2 "
                         "(leave it out to scale it to the bot's intents).")
    if options.scale_factor <= 0:
        raise InboxError("--scale-factor must be positive.")
    traffic = read_traffic(Path(options.endpoints), since, until, progress=options.progress)
    read_seconds = time.perf_counter() - started
    bot = load_bot_model(options.model)
    distinct = distinct_texts(traffic)
    parse_started = time.perf_counter()
    parsed = bot.parse(distinct.texts, options.batch_size, options.progress)
    parse_seconds = time.perf_counter() - parse_started

    low = options.low_confidence
    if low is None:
        low = max(DEFAULT_LOW_CONFIDENCE, bot.threshold or 0.0)
    model = bot.classifier.model
    not_handled = unhandled_mask(parsed, low, model.config.out_of_scope_intent)
    unhandled = np.flatnonzero(not_handled)
    confident = np.flatnonzero(~not_handled)

    group_started = time.perf_counter()
    head = model.head
    support = head.support.numpy()
    targets = head.support_targets.numpy()
    intents = list(head.labels)
    # clusters as broad as the bot's own intents, times the factor chosen on held-out data
    scale = intent_scale(support, targets, len(intents))
    threshold = options.distance_threshold
    if threshold is None:
        threshold = min(options.scale_factor * scale, 1.5)
    counts = distinct.counts
    cluster_ids = cluster_embeddings(
        parsed.embeddings[unhandled], threshold, options.linkage,
        options.max_cluster_points, priority=[counts[i] for i in unhandled],
    )
    protos = prototypes(support, targets, len(intents))
    spread = intent_spread(support, targets, len(intents), EXISTING_QUANTILE)
    clusters, leftover = summarise_clusters(
        parsed.embeddings[unhandled], cluster_ids, [counts[i] for i in unhandled],
        [distinct.senders[i] for i in unhandled], protos, spread, intents,
        options.min_cluster_size,
    )
    taken = set(intents)
    for cluster in clusters:
        if cluster.near_existing:
            cluster.name = cluster.nearest_intent
        else:
            cluster.name = candidate_name(
                [distinct.texts[unhandled[m]] for m in cluster.members], taken)
            taken.add(cluster.name)
    review = review_confident(
        parsed.embeddings[confident], [parsed.intent[i] for i in confident],
        parsed.confidence[confident], support, [intents[t] for t in targets],
    )
    group_seconds = time.perf_counter() - group_started
    result = {
        "model": bot.path,
        "tracker_store": traffic.store,
        "endpoints": str(options.endpoints),
        "window": {"since": since, "until": until},
        "fallback": {"threshold": bot.threshold,
                     "ambiguity_threshold": bot.fallback_config.get("ambiguity_threshold"),
                     "low_confidence": low},
        "clustering": {"method": "agglomerative", "metric": "cosine",
                       "linkage": options.linkage,
                       "distance_threshold": round(threshold, 4),
                       "intent_scale": round(scale, 4),
                       "scale_factor": (options.scale_factor
                                        if options.distance_threshold is None else None),
                       "min_cluster_size": options.min_cluster_size},
        "training_texts": list(model.texts),
        "traffic_share": traffic_share(model, parsed, distinct, bot.threshold),
    }
    return write_reports(
        Path(options.output_dir), result, traffic, distinct, parsed, unhandled, confident,
        clusters, leftover, review, options.max_examples,
        timings={"read_seconds": read_seconds, "parse_seconds": parse_seconds,
                 "group_seconds": group_seconds,
                 "total_seconds": time.perf_counter() - started},
        support_intents=[intents[t] for t in targets],
    )

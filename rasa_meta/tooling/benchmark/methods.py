"""The methods compared, one runner each (:data:`RUNNERS`), and what each measures.

A runner takes a job (the split's texts and labels, the latency sample, the batch size, the
plugin encoder, and for Rasa methods the ``config.yml``) and a scratch directory, and returns
its predictions, timings and memory. Rasa, torch and TensorFlow are imported inside the
runners, so a DIET child process never loads torch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

PLUGIN = "rasa_meta"
PLUGIN_MATCHING = "rasa_meta[matching]"
DIET = "diet"
CENTROID = "minilm[centroid]"
LOGREG = "minilm[logreg]"
BARE_FORWARD = "bare_encoder_forward"
METHODS = (PLUGIN, PLUGIN_MATCHING, DIET, CENTROID, LOGREG)
RASA_METHODS = (PLUGIN, PLUGIN_MATCHING, DIET)
FROZEN_ENCODER = "minilm"

# What "batch msg/s" measures, written into results.json and results.md.
THROUGHPUT_MODE = (
    "Rasa methods: the loaded model's NLU graph (agent.processor.graph_runner, the graph "
    "parse_message runs) is called on lists of {batch} messages; DIETClassifier.process still "
    "predicts one message at a time inside a batch, the plugin embeds the batch at once. "
    "Frozen baselines: SentenceEncoder.encode + head on the same chunks of {batch}."
)

DIET_PIPELINE = """\
  - name: WhitespaceTokenizer
  - name: RegexFeaturizer
  - name: LexicalSyntacticFeaturizer
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 4
  - name: DIETClassifier
    epochs: 100
    constrain_similarities: true
"""


def rasa_config(method: str, encoder: str) -> str:
    """The config.yml a Rasa method is trained with."""
    if method == DIET:
        pipeline = DIET_PIPELINE
    elif method in (PLUGIN, PLUGIN_MATCHING):
        pipeline = f"  - name: rasa_meta.MetaIntentClassifier\n    encoder: {json.dumps(encoder)}\n"
        if method == PLUGIN_MATCHING:
            pipeline += "    head: matching\n"
    else:
        raise ValueError(f"'{method}' is not trained with Rasa.")
    return (
        "recipe: default.v1\n"
        "assistant_id: rasa-meta-benchmark\n"
        "language: en\n"
        f"pipeline:\n{pipeline}"
        "policies: []\n"
    )


# --- measuring -----------------------------------------------------------------------------


def peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def timed_calls(fn: Callable[[str], Any], texts: Sequence[str], warmup: int) -> List[float]:
    for text in texts[:warmup]:
        fn(text)
    out = []
    for text in texts:
        start = time.perf_counter()
        fn(text)
        out.append(time.perf_counter() - start)
    return out


def chunks(items: Sequence[str], size: int) -> List[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- the runners ---------------------------------------------------------------------------


def run_rasa(job: Dict[str, Any], workdir: Path) -> Dict[str, Any]:
    import asyncio

    # Import the libraries before the clock starts: train time is training, not imports.
    # (Rasa imports TensorFlow with its default components, for the plugin's runs too.)
    import rasa.nlu.classifiers.diet_classifier  # noqa: F401
    from rasa.core.agent import Agent
    from rasa.core.channels.channel import UserMessage
    from rasa.engine.constants import PLACEHOLDER_MESSAGE, PLACEHOLDER_TRACKER
    from rasa.model_training import train_nlu
    from rasa.shared.core.trackers import DialogueStateTracker
    from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, TEXT
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    from rasa_meta.tooling.rasa_agent import configure_like_rasa_cli

    if job["method"] != DIET:  # torch and transformers: only the plugin's runs load them
        import transformers  # noqa: F401

        import rasa_meta.component  # noqa: F401

    configure_like_rasa_cli()
    nlu_file, config_file = workdir / "nlu.yml", workdir / "config.yml"
    examples = [Message(data={TEXT: t, INTENT: lab})
                for t, lab in zip(job["train_texts"], job["train_labels"])]
    nlu_file.write_text(TrainingData(training_examples=examples).nlu_as_yaml(), encoding="utf-8")
    config_file.write_text(job["config"], encoding="utf-8")

    start = time.perf_counter()
    model_path = train_nlu(str(config_file), str(nlu_file), str(workdir / "models"),
                           fixed_model_name="model")
    train_s = time.perf_counter() - start
    if not model_path:
        raise RuntimeError("rasa.model_training.train_nlu returned no model (see the log).")
    start = time.perf_counter()
    agent = Agent.load(model_path)
    load_s = time.perf_counter() - start

    def intent_of(parse: Dict[str, Any]) -> str | None:
        return (parse.get(INTENT) or {}).get(INTENT_NAME_KEY)

    async def parse_timed(texts: Sequence[str], warmup: int) -> tuple:
        for text in texts[:warmup]:
            await agent.parse_message(text)
        seconds, preds = [], []
        for text in texts:
            begin = time.perf_counter()
            parse = await agent.parse_message(text)
            seconds.append(time.perf_counter() - begin)
            preds.append(intent_of(parse))
        return seconds, preds

    seconds, single_preds = asyncio.run(parse_timed(job["latency_texts"], job["warmup"]))

    processor = agent.processor
    target = processor.model_metadata.nlu_target
    tracker = DialogueStateTracker.from_events("benchmark", [])

    def parse_batch(texts: Sequence[str]) -> List[str | None]:
        results = processor.graph_runner.run(
            inputs={PLACEHOLDER_MESSAGE: [UserMessage(t) for t in texts],
                    PLACEHOLDER_TRACKER: tracker},
            targets=[target],
        )
        return [intent_of(m.as_dict()) for m in results[target]]

    batches = chunks(job["test_texts"], job["batch_size"])
    parse_batch(batches[0])  # warm-up
    preds: List[str | None] = []
    start = time.perf_counter()
    for chunk in batches:
        preds += parse_batch(chunk)
    batch_s = time.perf_counter() - start

    where = {t: i for i, t in enumerate(job["test_texts"])}
    agree = [preds[where[t]] == p for t, p in zip(job["latency_texts"], single_preds)]
    result = {
        "predictions": preds,
        "train_s": train_s,
        "load_s": load_s,
        "batch_s": batch_s,
        "latencies": seconds,
        "parse_agreement": sum(agree) / len(agree) if agree else None,
        "model_mb": Path(model_path).stat().st_size / 2**20,
        "peak_rss_mb": peak_rss_mb(),  # before the extra encoder below is loaded
    }
    if job["method"] != DIET:
        result.update(_paired_forward(job, agent))
    return result


def _paired_forward(job: Dict[str, Any], agent: Any) -> Dict[str, Any]:
    """Plugin parse vs bare encoder forward, alternating message by message in one process.

    Both see the same load on the machine, so their ratio holds even where absolute latencies
    drift (a busy CPU); the separate ``bare_encoder_forward`` row is the standalone figure.
    """
    import asyncio

    from rasa_meta.runtime.device import resolve_device
    from rasa_meta.runtime.encoder import SentenceEncoder
    from rasa_meta.training.metrics import percentile

    encoder = SentenceEncoder.from_pretrained(job["encoder"]).to(resolve_device("auto"))

    async def alternate(texts: Sequence[str], warmup: int) -> tuple:
        for text in texts[:warmup]:
            await agent.parse_message(text)
            encoder.encode([text])
        parse, forward = [], []
        for text in texts:
            begin = time.perf_counter()
            await agent.parse_message(text)
            parse.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            encoder.encode([text])
            forward.append(time.perf_counter() - begin)
        return parse, forward

    parse, forward = asyncio.run(alternate(job["latency_texts"], job["warmup"]))
    return {"paired_parse_p50_ms": 1000 * percentile(parse, 50),
            "paired_forward_p50_ms": 1000 * percentile(forward, 50)}


def run_frozen(job: Dict[str, Any], workdir: Path) -> Dict[str, Any]:
    import torch
    import transformers  # noqa: F401

    from rasa_meta.runtime.device import resolve_device
    from rasa_meta.runtime.encoder import SentenceEncoder
    from rasa_meta.runtime.heads import FALLBACK_TEMPERATURE, make_head
    from rasa_meta.tooling.evaluation import fit_logistic_regression

    batch = job["batch_size"]
    start = time.perf_counter()
    encoder = SentenceEncoder.from_pretrained(FROZEN_ENCODER).to(resolve_device("auto"))
    train_emb = encoder.encode(job["train_texts"], batch_size=batch)
    if job["method"] == CENTROID:
        head = make_head("prototype", FALLBACK_TEMPERATURE).fit(train_emb, job["train_labels"])

        def predict(emb: torch.Tensor) -> List[str]:
            return [head.labels[i] for i in head.similarities(emb).argmax(1).tolist()]
    else:
        clf = fit_logistic_regression(train_emb, job["train_labels"])

        def predict(emb: torch.Tensor) -> List[str]:
            return [str(p) for p in clf.predict(emb.numpy())]
    train_s = time.perf_counter() - start

    def classify(texts: Sequence[str]) -> List[str]:
        return predict(encoder.encode(list(texts), batch_size=batch))

    seconds = timed_calls(lambda t: classify([t]), job["latency_texts"], job["warmup"])
    batches = chunks(job["test_texts"], batch)
    classify(batches[0])
    preds: List[str] = []
    start = time.perf_counter()
    for chunk in batches:
        preds += classify(chunk)
    return {"predictions": preds, "train_s": train_s, "batch_s": time.perf_counter() - start,
            "latencies": seconds}


def run_bare_forward(job: Dict[str, Any], workdir: Path) -> Dict[str, Any]:
    from rasa_meta.runtime.device import resolve_device
    from rasa_meta.runtime.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(job["encoder"]).to(resolve_device("auto"))
    seconds = timed_calls(lambda t: encoder.encode([t]), job["latency_texts"], job["warmup"])
    return {"latencies": seconds}


Runner = Callable[[Dict[str, Any], Path], Dict[str, Any]]

# One runner per method; the bare forward is the plugin encoder alone, for its latency.
RUNNERS: Dict[str, Runner] = {
    PLUGIN: run_rasa,
    PLUGIN_MATCHING: run_rasa,
    DIET: run_rasa,
    CENTROID: run_frozen,
    LOGREG: run_frozen,
    BARE_FORWARD: run_bare_forward,
}


def run_job(job: Dict[str, Any], workdir: Path) -> Dict[str, Any]:
    return RUNNERS[job["method"]](job, workdir)

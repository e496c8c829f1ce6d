"""``rasa-meta benchmark``: the plugin against Rasa's DIET pipeline and frozen-encoder baselines.

Every method sees identical train/test splits in one run:

- ``rasa_meta`` / ``rasa_meta[matching]``: the plugin exactly as Rasa runs it. The split is
  written as Rasa NLU YAML next to a ``config.yml``, trained with
  ``rasa.model_training.train_nlu``, loaded with ``Agent.load`` and parsed with
  ``await agent.parse_message(text)``;
- ``diet``: Rasa's default DIETClassifier pipeline, trained and parsed the same way;
- ``minilm[centroid]`` / ``minilm[logreg]``: the frozen base encoder (all-MiniLM-L6-v2) with a
  nearest-centroid or logistic-regression head, no Rasa.

Each method runs in a child process (``multiprocessing`` "spawn"), so its peak RSS is its own
and TensorFlow's memory is given back between methods (this module imports neither torch nor
Rasa at the top, so a DIET child never loads torch). Results go to ``results.json``,
``results.md`` and PNG plots; see ``docs/benchmark.md`` for what each column means.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Union

from tqdm.auto import tqdm

from rasa_meta import __version__
from rasa_meta.training.corpus import IntentCorpus, data_root, load_rasa_nlu, load_split

logger = logging.getLogger(__name__)

PLUGIN = "rasa_meta"
PLUGIN_MATCHING = "rasa_meta[matching]"
DIET = "diet"
CENTROID = "minilm[centroid]"
LOGREG = "minilm[logreg]"
BARE_FORWARD = "bare_encoder_forward"
METHODS = (PLUGIN, PLUGIN_MATCHING, DIET, CENTROID, LOGREG)
RASA_METHODS = (PLUGIN, PLUGIN_MATCHING, DIET)
FROZEN_ENCODER = "minilm"

KNOWN_DATASETS = ("BANKING77", "CLINC150")
SHOTS = ("5", "10", "full")
FIXED_SPLITS = {"5": "train_5", "10": "train_10", "full": "train"}

# What "batch msg/s" measures, written into results.json and results.md.
THROUGHPUT_MODE = (
    "Rasa methods: the loaded model's NLU graph (agent.processor.graph_runner, the graph "
    "parse_message runs) is called on lists of {batch} messages; DIETClassifier.process still "
    "predicts one message at a time inside a batch, the plugin embeds the batch at once. "
    "Frozen baselines: SentenceEncoder.encode + head on the same chunks of {batch}."
)

QUICK = {
    "datasets": ["CLINC150"],
    "shots": ["5"],
    "max_intents": 10,
    "max_test": 100,
    "latency_messages": 100,
}

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


EncoderSpec = Union[str, Mapping[str, str]]


def parse_encoder_specs(specs: Sequence[str] | None) -> Dict[str, str]:
    """``["x", "BANKING77=y"]`` -> ``{"*": "x", "BANKING77": "y"}``.

    A ``DATASET=ENCODER`` spec sets the plugin encoder of one dataset, so every dataset can be
    benchmarked with an encoder whose meta-training never saw it, in one run. A spec without
    ``=`` (or whose left side is a path) is the encoder of every other dataset.
    """
    encoders: Dict[str, str] = {}
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        if sep and name and value and "/" not in name and "\\" not in name:
            encoders[name] = value
        else:
            encoders["*"] = spec
    encoders.setdefault("*", "default")
    return encoders


def encoder_for(encoders: EncoderSpec, dataset: str) -> str:
    """The plugin encoder benchmarked on ``dataset``."""
    if isinstance(encoders, str):
        return encoders
    return encoders.get(dataset, encoders.get("*", "default"))


def _describe_encoders(encoders: EncoderSpec) -> str:
    if isinstance(encoders, str):
        return encoders
    if set(encoders) == {"*"}:
        return encoders["*"]
    rest = [f"{k}={v}" for k, v in encoders.items() if k != "*"]
    return ", ".join(rest + ([f"others={encoders['*']}"] if "*" in encoders else []))


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


# --- splits ------------------------------------------------------------------------------------


@dataclass
class Split:
    """One train/test pair every method is run on."""

    dataset: str
    shots: str
    seed: int | None
    train_split: str  # how the training examples were chosen
    train: IntentCorpus
    test: IntentCorpus


def _restrict(
    train: IntentCorpus, test: IntentCorpus, intents: Sequence[str] | None,
    max_test: int | None, seed: int = 0,
) -> tuple:
    if intents is not None:
        train, test = train.subset(intents), test.subset(intents)
    if max_test is not None and len(test) > max_test:
        keep = sorted(random.Random(seed).sample(range(len(test)), max_test))
        test = IntentCorpus(
            test.name, [test.texts[i] for i in keep], [test.labels[i] for i in keep], test.domains
        )
    return train, test


def build_splits(
    datasets: Sequence[str],
    shots: Sequence[str],
    seeds: Sequence[int] | None = None,
    root: Path | None = None,
    nlu_train: Union[str, Path] | None = None,
    nlu_test: Union[str, Path] | None = None,
    max_intents: int | None = None,
    max_test: int | None = None,
) -> List[Split]:
    """Train/test pairs for each dataset, shot count and seed.

    BANKING77/CLINC150 use the fixed ``train_5``/``train_10`` splits unless ``seeds`` is given,
    in which case k shots per intent are drawn from ``train`` with ``sample_shots`` for each
    seed. ``full`` is the whole ``train`` split and runs once (it does not depend on a seed).
    A Rasa NLU YAML dataset has no fixed k-shot splits: k shots are always sampled from its
    train file (seed 0 when no seeds are given).
    """
    from rasa_meta.tooling.evaluation import sample_shots

    root = Path(root) if root else data_root()
    sources: List[tuple] = []
    for name in datasets:
        if name not in KNOWN_DATASETS:
            raise ValueError(f"Unknown dataset '{name}': use {list(KNOWN_DATASETS)} or "
                             f"--nlu-train/--nlu-test for a Rasa NLU YAML dataset.")
        sources.append((name, None, load_split(root / name / "test", name=f"{name}/test")))
    if nlu_train or nlu_test:
        if not (nlu_train and nlu_test):
            raise ValueError("A Rasa NLU YAML dataset needs both --nlu-train and --nlu-test.")
        full = load_rasa_nlu(nlu_train)
        sources.append((Path(nlu_train).stem, full, load_rasa_nlu(nlu_test)))
    splits: List[Split] = []
    for name, yaml_train, test in sources:
        full_train = yaml_train or load_split(root / name / "train", name=f"{name}/train")
        intents = None
        if max_intents is not None and max_intents < len(full_train.intents):
            intents = sorted(random.Random(0).sample(full_train.intents, max_intents))
        for k in shots:
            if k not in SHOTS:
                raise ValueError(f"Shots must be among {list(SHOTS)}, got '{k}'.")
            if k == "full":
                runs = [(None, "train" if yaml_train is None else Path(nlu_train).name, full_train)]
            elif seeds is None and yaml_train is None:
                runs = [(None, FIXED_SPLITS[k],
                         load_split(root / name / FIXED_SPLITS[k], name=f"{name}/{k}"))]
            else:
                runs = [(s, f"sample_shots(train, {k}, seed={s})",
                         sample_shots(full_train, int(k), s)) for s in (seeds or [0])]
            for seed, how, train in runs:
                train, small_test = _restrict(train, test, intents, max_test)
                splits.append(Split(name, k, seed, how, train, small_test))
    return splits


# --- child processes: one per (split, method) ------------------------------------------------


def _peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _timed_calls(fn: Callable[[str], Any], texts: Sequence[str], warmup: int) -> List[float]:
    for text in texts[:warmup]:
        fn(text)
    out = []
    for text in texts:
        start = time.perf_counter()
        fn(text)
        out.append(time.perf_counter() - start)
    return out


def _latency_fields(seconds: List[float]) -> Dict[str, float]:
    from rasa_meta.tooling.evaluation import percentile

    return {
        "p50_ms": 1000 * percentile(seconds, 50),
        "p95_ms": 1000 * percentile(seconds, 95),
        "latency_messages": len(seconds),
    }


def _chunks(items: Sequence[str], size: int) -> List[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _quiet_child_env(workdir: Path) -> None:
    # A fresh Rasa cache per run: a cache hit would skip training and fake the train time.
    os.environ["RASA_CACHE_DIRECTORY"] = str(workdir / "rasa-cache")
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _run_rasa(job: Dict[str, Any], workdir: Path) -> Dict[str, Any]:
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

    if job["method"] != DIET:  # torch and transformers: only the plugin's runs load them
        import transformers  # noqa: F401

        import rasa_meta.component  # noqa: F401

    _configure_like_rasa_cli()
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

    chunks = _chunks(job["test_texts"], job["batch_size"])
    parse_batch(chunks[0])  # warm-up
    preds: List[str | None] = []
    start = time.perf_counter()
    for chunk in chunks:
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
        "peak_rss_mb": _peak_rss_mb(),  # before the extra encoder below is loaded
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

    from rasa_meta.runtime.encoder import SentenceEncoder
    from rasa_meta.runtime.model import resolve_device
    from rasa_meta.tooling.evaluation import percentile

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


def _configure_like_rasa_cli() -> None:
    """Logging and TensorFlow set up as ``rasa train``/``rasa run`` do (rasa/__main__.py).

    Without it structlog prints every parse at debug level, which would be timed too.
    """
    import rasa.utils.io
    import rasa.utils.tensorflow.environment as tf_env
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.log_utils import configure_structlog

    configure_logging_and_warnings(None, None, warn_only_once=True, filter_repeated_logs=True)
    tf_env.setup_tf_environment()
    rasa.utils.io.configure_colored_logging(None)
    configure_structlog(None)


def _run_frozen(job: Dict[str, Any]) -> Dict[str, Any]:
    import torch
    import transformers  # noqa: F401

    from rasa_meta.runtime.encoder import SentenceEncoder
    from rasa_meta.runtime.heads import make_head
    from rasa_meta.runtime.model import resolve_device
    from rasa_meta.tooling.evaluation import fit_logistic_regression

    batch = job["batch_size"]
    start = time.perf_counter()
    encoder = SentenceEncoder.from_pretrained(FROZEN_ENCODER).to(resolve_device("auto"))
    train_emb = encoder.encode(job["train_texts"], batch_size=batch)
    if job["method"] == CENTROID:
        head = make_head("prototype", 0.05).fit(train_emb, job["train_labels"])

        def predict(emb: torch.Tensor) -> List[str]:
            return [head.labels[i] for i in head.similarities(emb).argmax(1).tolist()]
    else:
        clf = fit_logistic_regression(train_emb, job["train_labels"])

        def predict(emb: torch.Tensor) -> List[str]:
            return [str(p) for p in clf.predict(emb.numpy())]
    train_s = time.perf_counter() - start

    def classify(texts: Sequence[str]) -> List[str]:
        return predict(encoder.encode(list(texts), batch_size=batch))

    seconds = _timed_calls(lambda t: classify([t]), job["latency_texts"], job["warmup"])
    chunks = _chunks(job["test_texts"], batch)
    classify(chunks[0])
    preds: List[str] = []
    start = time.perf_counter()
    for chunk in chunks:
        preds += classify(chunk)
    return {"predictions": preds, "train_s": train_s, "batch_s": time.perf_counter() - start,
            "latencies": seconds}


def _run_bare_forward(job: Dict[str, Any]) -> Dict[str, Any]:
    from rasa_meta.runtime.encoder import SentenceEncoder
    from rasa_meta.runtime.model import resolve_device

    encoder = SentenceEncoder.from_pretrained(job["encoder"]).to(resolve_device("auto"))
    seconds = _timed_calls(lambda t: encoder.encode([t]), job["latency_texts"], job["warmup"])
    return {"latencies": seconds}


def _run_job(job: Dict[str, Any], workdir: Path) -> Dict[str, Any]:
    if job["method"] == BARE_FORWARD:
        return _run_bare_forward(job)
    if job["method"] in RASA_METHODS:
        return _run_rasa(job, workdir)
    return _run_frozen(job)


def _child_main(job: Dict[str, Any], result_file: str, log_file: str | None) -> None:
    """Entry point of a spawned child: run one job, write its result as JSON."""
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    workdir = Path(result_file).parent
    _quiet_child_env(workdir)
    try:
        result = _run_job(job, workdir)
        result.setdefault("peak_rss_mb", _peak_rss_mb())
    except Exception as e:  # reported in the row, the benchmark goes on
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    Path(result_file).write_text(json.dumps(result), encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()


def _run_isolated(job: Dict[str, Any], workdir: Path, log_file: Path | None,
                  isolate: bool) -> Dict[str, Any]:
    result_file = workdir / "result.json"
    if isolate:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_child_main,
                           args=(job, str(result_file), str(log_file) if log_file else None))
        proc.start()
        proc.join()
        if not result_file.is_file():
            return {"error": f"child process exited with code {proc.exitcode} (killed, out of "
                             f"memory?); see {log_file or 'its output'}"}
    else:  # in this process: peak RSS is then the whole process's so far
        saved = os.environ.get("RASA_CACHE_DIRECTORY")
        _quiet_child_env(workdir)
        try:
            result = _run_job(job, workdir)
            result.setdefault("peak_rss_mb", _peak_rss_mb())
        except Exception as e:
            logger.exception("benchmark job %s failed", job["method"])
            result = {"error": f"{type(e).__name__}: {e}"}
        finally:
            if saved is None:
                os.environ.pop("RASA_CACHE_DIRECTORY", None)
            else:
                os.environ["RASA_CACHE_DIRECTORY"] = saved
        return result
    return json.loads(result_file.read_text(encoding="utf-8"))


# --- the benchmark -------------------------------------------------------------------------


def machine_info() -> Dict[str, Any]:
    from importlib import metadata

    import torch

    from rasa_meta.runtime.model import resolve_device

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = resolve_device("auto")
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    return {
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "rasa_meta": __version__,
        "rasa": version("rasa"),
        "tensorflow": version("tensorflow") or version("tensorflow-cpu"),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) + (
            f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
        ),
    }


def _check_encoder(encoder: str) -> None:
    from rasa_meta.runtime.encoder import DEFAULT_ENCODER, SHIPPED_ENCODER_DIR, resolve_encoder

    resolved = resolve_encoder(encoder)  # raises EncoderNotFoundError for a missing path
    if encoder in (None, "", DEFAULT_ENCODER) and not Path(resolved).is_dir():
        raise ValueError(
            f"The shipped meta-trained encoder is missing ({SHIPPED_ENCODER_DIR}). Benchmark "
            f"another one with --encoder (e.g. '--encoder minilm', the frozen base model, or a "
            f"directory written by 'rasa-meta meta-train')."
        )


def _estimate_skipped_diet(rows: List[Dict[str, Any]]) -> None:
    """Projected DIET train seconds for skipped rows, from this run's DIET rows.

    At a fixed number of epochs DIET's train time grows about linearly with the number of
    training examples, so the estimate scales the largest measured DIET split of the dataset.
    """
    measured = [r for r in rows if r["method"] == DIET and r.get("train_s") and r.get("n_train")]
    for row in rows:
        if row["method"] != DIET or not row.get("skipped"):
            continue
        same = [r for r in measured if r["dataset"] == row["dataset"]] or measured
        if same:
            ref = max(same, key=lambda r: r["n_train"])
            row["estimated_train_s"] = ref["train_s"] * row["n_train"] / ref["n_train"]
        else:
            row["estimated_train_s"] = None


def _finish_rows(rows: List[Dict[str, Any]]) -> None:
    _add_ratios(rows)
    _estimate_skipped_diet(rows)


def _add_ratios(rows: List[Dict[str, Any]]) -> None:
    diet = {(r["dataset"], r["shots"], r["seed"]): r for r in rows
            if r["method"] == DIET and r.get("error") is None}
    bare = {r["dataset"]: r for r in rows if r["method"] == BARE_FORWARD and r.get("p50_ms")}
    for row in rows:
        ref = diet.get((row["dataset"], row["shots"], row["seed"]))
        for key, out in (("train_s", "train_vs_diet"), ("p50_ms", "p50_vs_diet")):
            ok = ref is not None and row.get(key) is not None and ref.get(key)
            row[out] = row[key] / ref[key] if ok else None
        if row["method"] in (PLUGIN, PLUGIN_MATCHING):
            forward = bare.get(row["dataset"])
            ok = forward is not None and row.get("p50_ms") is not None
            row["p50_vs_bare_forward"] = row["p50_ms"] / forward["p50_ms"] if ok else None
            ok = row.get("paired_parse_p50_ms") and row.get("paired_forward_p50_ms")
            row["paired_parse_vs_forward"] = (
                row["paired_parse_p50_ms"] / row["paired_forward_p50_ms"] if ok else None
            )


def run_benchmark(
    datasets: Sequence[str] | None = None,
    shots: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    encoder: EncoderSpec = "default",
    output_dir: Union[str, Path] = "benchmark_results",
    nlu_train: Union[str, Path] | None = None,
    nlu_test: Union[str, Path] | None = None,
    root: Union[str, Path] | None = None,
    quick: bool = False,
    max_intents: int | None = None,
    max_test: int | None = None,
    latency_messages: int | None = None,
    warmup_messages: int = 10,
    batch_size: int = 64,
    isolate: bool = True,
    show_child_output: bool = False,
    command: str | None = None,
    diet_max_train: int | None = None,
) -> Dict[str, Any]:
    """Run every method on every split; write results.json, results.md and plots.

    ``encoder`` is one encoder for every dataset or a mapping ``{dataset: encoder}`` with
    ``"*"`` for the rest (see ``parse_encoder_specs``). ``quick`` fills the options left as
    ``None`` with a small subset (CLINC150, 10 intents, ``train_5``, 100 test messages).
    ``diet_max_train`` skips DIET on larger training splits (100 epochs of DIET on a 15k-example
    split take hours on a CPU); a skipped row carries the reason and a train-time estimate from
    this run's own DIET rows. ``results.json`` is rewritten after every run, so an interrupted
    benchmark keeps what it measured. Returns ``{"run": {...}, "rows": [...]}``.
    """
    from rasa_meta.tooling.evaluation import accuracy, macro_f1

    preset = QUICK if quick else {}
    if datasets is None:
        datasets = preset.get("datasets") or ([] if nlu_train else list(KNOWN_DATASETS))
    shots = [str(s) for s in (shots or preset.get("shots") or SHOTS)]
    max_intents = max_intents if max_intents is not None else preset.get("max_intents")
    max_test = max_test if max_test is not None else preset.get("max_test")
    latency_messages = latency_messages or preset.get("latency_messages") or 200
    methods = list(methods or METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; choose from {list(METHODS)}.")

    out = Path(output_dir)
    splits = build_splits(datasets, shots, seeds, Path(root) if root else None,
                          nlu_train, nlu_test, max_intents, max_test)
    if not splits:
        raise ValueError("Nothing to run: no datasets given.")
    if any(m in (PLUGIN, PLUGIN_MATCHING) for m in methods):
        for name in dict.fromkeys(split.dataset for split in splits):
            _check_encoder(encoder_for(encoder, name))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    run_info = machine_info()
    run_info.update({
        "command": command or " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "encoder": _describe_encoders(encoder),
        "encoders": ({"*": encoder} if isinstance(encoder, str) else dict(encoder)),
        "frozen_encoder": FROZEN_ENCODER,
        "diet_max_train": diet_max_train,
        "quick": quick,
        "seeds": list(seeds) if seeds is not None else None,
        "isolated_processes": isolate,
        "batch_size": batch_size,
        "warmup_messages": warmup_messages,
        "throughput_mode": THROUGHPUT_MODE.format(batch=batch_size),
        "diet_config": rasa_config(DIET, "default"),
        "plugin_config": rasa_config(PLUGIN, encoder_for(encoder, splits[0].dataset)),
    })

    # The same latency sample for every method of a split; one bare forward row per dataset.
    jobs: List[tuple] = []
    bare_done = set()
    for split in splits:
        order = list(range(len(split.test)))
        random.Random(0).shuffle(order)
        sample = [split.test.texts[i] for i in order[:latency_messages]]
        plugin_encoder = encoder_for(encoder, split.dataset)
        common = {"latency_texts": sample, "warmup": warmup_messages, "batch_size": batch_size,
                  "encoder": plugin_encoder}
        if split.dataset not in bare_done and any(m.startswith(PLUGIN) for m in methods):
            bare_done.add(split.dataset)
            jobs.append((split, dict(common, method=BARE_FORWARD)))
        for method in methods:
            job = dict(common, method=method, train_texts=split.train.texts,
                       train_labels=split.train.labels, test_texts=split.test.texts)
            if method in RASA_METHODS:
                job["config"] = rasa_config(method, plugin_encoder)
            if method == DIET and diet_max_train is not None and len(split.train) > diet_max_train:
                job["skip"] = (f"not run: {len(split.train)} training examples > "
                               f"--diet-max-train {diet_max_train}")
            jobs.append((split, job))

    rows: List[Dict[str, Any]] = []
    started = time.perf_counter()
    bar = tqdm(jobs, desc="benchmark", unit="run")
    for split, job in bar:
        method = job["method"]
        bar.set_postfix_str(f"{split.dataset} {split.shots}-shot seed={_seed(split.seed)} "
                            f"{method}")
        tag = f"{split.dataset}_{split.shots}_{split.seed if split.seed is not None else 'fixed'}"
        safe = method.replace("[", "-").replace("]", "")
        log_file = None if show_child_output else out / "logs" / f"{tag}_{safe}.log"
        if log_file is not None and log_file.exists():
            log_file.unlink()
        wall = time.perf_counter()
        if "skip" in job:
            result: Dict[str, Any] = {}
        else:
            with tempfile.TemporaryDirectory(prefix="rasa-meta-bench-") as tmp:
                result = _run_isolated(job, Path(tmp), log_file, isolate)
        wall = time.perf_counter() - wall
        row: Dict[str, Any] = {
            "dataset": split.dataset,
            "shots": split.shots,
            "seed": split.seed,
            "train_split": split.train_split,
            "method": method,
            "n_intents": len(split.train.intents),
            "n_train": len(split.train),
            "n_test": len(split.test),
            "accuracy": None, "macro_f1": None, "train_s": None, "load_s": None,
            "p50_ms": None, "p95_ms": None, "latency_messages": None,
            "batch_msgs_per_s": None, "peak_rss_mb": result.get("peak_rss_mb"),
            "model_mb": result.get("model_mb"), "parse_agreement": result.get("parse_agreement"),
            "paired_parse_p50_ms": result.get("paired_parse_p50_ms"),
            "paired_forward_p50_ms": result.get("paired_forward_p50_ms"),
            "process_wall_s": wall,
            "error": result.get("error"),
            "skipped": job.get("skip"),
            "log": str(log_file) if log_file is not None and "skip" not in job else None,
        }
        if method == BARE_FORWARD:
            row.update({"n_train": None, "n_test": None, "shots": None, "seed": None,
                        "train_split": None, "encoder": job["encoder"]})
        elif method in (PLUGIN, PLUGIN_MATCHING):
            row["encoder"] = job["encoder"]
        else:
            row["encoder"] = FROZEN_ENCODER if method in (CENTROID, LOGREG) else None
        if "latencies" in result:
            row.update(_latency_fields(result["latencies"]))
        if "predictions" in result:
            row["accuracy"] = accuracy(split.test.labels, result["predictions"])
            row["macro_f1"] = macro_f1(split.test.labels, result["predictions"])
            row["batch_msgs_per_s"] = len(split.test) / max(result["batch_s"], 1e-9)
            row["train_s"] = result["train_s"]
            row["load_s"] = result.get("load_s")
        if row["error"]:
            tqdm.write(f"[benchmark] {split.dataset} {split.shots} {method} failed: "
                       f"{row['error']} (log: {log_file})")
        elif row["skipped"]:
            tqdm.write(f"[benchmark] {split.dataset} {split.shots} {method} {row['skipped']}")
        else:
            tqdm.write(_progress_line(row))
        rows.append(row)
        run_info["complete"] = len(rows) == len(jobs)
        run_info["wall_s"] = time.perf_counter() - started
        _finish_rows(rows)
        (out / "results.json").write_text(json.dumps({"run": run_info, "rows": rows}, indent=2)
                                          + "\n", encoding="utf-8")
    result = {"run": run_info, "rows": rows}
    (out / "results.md").write_text(to_markdown(result), encoding="utf-8")
    result["plots"] = [str(p) for p in write_plots(rows, out)]
    return result


def _progress_line(row: Dict[str, Any]) -> str:
    parts = [f"[benchmark] {row['dataset']}"]
    if row["method"] != BARE_FORWARD:
        parts.append(f"{row['shots']}-shot seed={_seed(row['seed'])}")
    parts.append(row["method"])
    for key, name in (("accuracy", "acc"), ("train_s", "train_s"), ("p50_ms", "p50_ms"),
                      ("peak_rss_mb", "rss_mb")):
        if row.get(key) is not None:
            parts.append(f"{name}={row[key]:.3f}" if key == "accuracy" else
                         f"{name}={row[key]:.1f}")
    return " ".join(parts)


# --- reports ---------------------------------------------------------------------------------


def _seed(seed: int | None) -> str:
    return "fixed" if seed is None else str(seed)


def _fmt(value: Any, digits: int = 1, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if percent:
        return f"{100 * value:.1f}"
    return f"{value:.{digits}f}"


def _mean_std(values: List[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{100 * mean:.1f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def to_markdown(result: Dict[str, Any]) -> str:
    run, rows = result["run"], result["rows"]
    lines = [
        "# rasa-meta benchmark",
        "",
        f"`{run['command']}`",
        "",
        f"{run['started']} · {run['cpu']} ({run['cpu_count']} cores, {run['memory_gb']} GB) · "
        f"device {run['device']} · rasa {run['rasa']} · tensorflow {run['tensorflow']} · "
        f"torch {run['torch']} · transformers {run['transformers']} · "
        f"plugin encoder `{run['encoder']}` · total {run['wall_s']:.0f} s"
        + ("" if run.get("complete", True) else " · **incomplete run**"),
        "",
        "| dataset | shots | seed | method | acc % | macro-F1 % | train s | train ×DIET | "
        "p50 ms | p95 ms | p50 ×DIET | batch msg/s | peak RSS MB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["method"] == BARE_FORWARD:
            continue
        if r.get("error"):
            lines.append(f"| {r['dataset']} | {r['shots']} | {_seed(r['seed'])} | {r['method']} "
                         f"| failed: {r['error'][:80]} |||||||||")
            continue
        if r.get("skipped"):
            estimate = r.get("estimated_train_s")
            note = (f"; est. train ≈ {estimate / 60:.0f} min from this run's DIET rows"
                    if estimate else "")
            lines.append(f"| {r['dataset']} | {r['shots']} | {_seed(r['seed'])} | {r['method']} "
                         f"| {r['skipped']}{note} |||||||||")
            continue
        lines.append(
            f"| {r['dataset']} | {r['shots']} | {_seed(r['seed'])} | {r['method']} "
            f"| {_fmt(r['accuracy'], percent=True)} | {_fmt(r['macro_f1'], percent=True)} "
            f"| {_fmt(r['train_s'])} | {_fmt(r.get('train_vs_diet'), 2)} "
            f"| {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r.get('p50_vs_diet'), 2)} "
            f"| {_fmt(r['batch_msgs_per_s'], 0)} | {_fmt(r['peak_rss_mb'], 0)} |"
        )
    bare = [r for r in rows if r["method"] == BARE_FORWARD]
    if bare:
        lines += [
            "",
            "Plugin parse latency against a bare encoder forward (one "
            "`SentenceEncoder.encode([text])` call with the dataset's plugin encoder). "
            "Standalone: the `bare_encoder_forward` run vs the parse p50 above (separate "
            "processes, run at different times). Paired: parse and forward alternate message by "
            "message in the plugin's process, so both see the same machine load.",
            "",
            "| dataset | shots | seed | method | forward p50 ms | parse p50 ms | parse ×forward "
            "| paired forward p50 ms | paired parse p50 ms | paired ×forward |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for b in bare:
            if b.get("error"):
                lines.append(f"| {b['dataset']} | | | {BARE_FORWARD} | failed: "
                             f"{b['error'][:80]} ||||||")
                continue
            lines.append(f"| {b['dataset']} | | | {BARE_FORWARD} | {_fmt(b['p50_ms'], 2)} "
                         "| | | | | |")
            for r in rows:
                if r["dataset"] == b["dataset"] and r["method"] in (PLUGIN, PLUGIN_MATCHING) \
                        and not r.get("error"):
                    lines.append(
                        f"| {r['dataset']} | {r['shots']} | {_seed(r['seed'])} | {r['method']} "
                        f"| {_fmt(b['p50_ms'], 2)} | {_fmt(r['p50_ms'], 2)} "
                        f"| {_fmt(r.get('p50_vs_bare_forward'), 2)} "
                        f"| {_fmt(r.get('paired_forward_p50_ms'), 2)} "
                        f"| {_fmt(r.get('paired_parse_p50_ms'), 2)} "
                        f"| {_fmt(r.get('paired_parse_vs_forward'), 2)} |"
                    )
    seeded = [r for r in rows if r["seed"] is not None and r["method"] != BARE_FORWARD]
    if seeded:
        lines += ["", "Accuracy % over seeds (mean ± sample std):", "",
                  "| dataset | shots | method | seeds | acc % | macro-F1 % |",
                  "|---|---|---|---:|---:|---:|"]
        groups: Dict[tuple, List[Dict[str, Any]]] = {}
        for r in seeded:
            groups.setdefault((r["dataset"], r["shots"], r["method"]), []).append(r)
        for (dataset, k, method), group in groups.items():
            ok = [r for r in group if r.get("accuracy") is not None]
            lines.append(f"| {dataset} | {k} | {method} | {len(ok)} "
                         f"| {_mean_std([r['accuracy'] for r in ok])} "
                         f"| {_mean_std([r['macro_f1'] for r in ok])} |")
    lines += [
        "",
        "train s: wall time of `rasa.model_training.train_nlu` (Rasa methods) or encoder load + "
        "embedding + head fit (minilm baselines), libraries already imported. "
        "p50/p95: one message at a time (`await agent.parse_message` for Rasa methods), "
        f"after {run['warmup_messages']} warm-up messages. "
        f"batch msg/s: {run['throughput_mode']} Peak RSS: the child process that ran the method "
        "(ru_maxrss), imports included.",
        "",
    ]
    return "\n".join(lines)


def write_plots(rows: List[Dict[str, Any]], out_dir: Union[str, Path]) -> List[Path]:
    """accuracy_vs_shots.png and accuracy_vs_train_seconds.png (one subplot per dataset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    done = [r for r in rows if r["method"] != BARE_FORWARD and r.get("accuracy") is not None]
    datasets = sorted({r["dataset"] for r in rows if r["method"] != BARE_FORWARD})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    markers = dict(zip(METHODS, "osD^v"))
    paths = []

    width = max(1, len(datasets))
    fig, axes = plt.subplots(1, width, figsize=(5 * width, 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        shots = [k for k in SHOTS if any(r["dataset"] == dataset and r["shots"] == k
                                         for r in done)]
        for m, method in enumerate(methods):
            xs, ys, errs = [], [], []
            offset = 0.05 * (m - (len(methods) - 1) / 2)  # keep equal points apart
            for i, k in enumerate(shots):
                accs = [r["accuracy"] for r in done
                        if (r["dataset"], r["shots"], r["method"]) == (dataset, k, method)]
                if accs:
                    mean = sum(accs) / len(accs)
                    xs.append(i + offset)
                    ys.append(100 * mean)
                    errs.append(100 * (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5)
            if xs:
                ax.errorbar(xs, ys, yerr=errs, marker=markers[method], capsize=3, label=method)
        ax.set_xticks(range(len(shots)))
        ax.set_xticklabels([k if k == "full" else f"{k}-shot" for k in shots])
        ax.set_title(dataset)
        ax.set_xlabel("training examples per intent")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_shots.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, width, figsize=(5 * width, 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for method in methods:
            points = [(r["train_s"], 100 * r["accuracy"]) for r in done
                      if r["dataset"] == dataset and r["method"] == method and r.get("train_s")]
            if points:
                ax.scatter([p[0] for p in points], [p[1] for p in points],
                           marker=markers[method], label=method)
        ax.set_xscale("log")
        ax.set_title(dataset)
        ax.set_xlabel("train wall seconds (log)")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_train_seconds.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths

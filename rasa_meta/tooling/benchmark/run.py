"""A benchmark run: its options (the command's flags are generated from them), the jobs
(every method on every split), and the rows of results written as they come in."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from tqdm.auto import tqdm

from rasa_meta import __version__
from rasa_meta.tooling.benchmark.isolation import run_isolated
from rasa_meta.tooling.benchmark.methods import (
    BARE_FORWARD,
    CENTROID,
    DIET,
    FROZEN_ENCODER,
    LOGREG,
    METHODS,
    PLUGIN,
    PLUGIN_MATCHING,
    RASA_METHODS,
    THROUGHPUT_MODE,
    rasa_config,
)
from rasa_meta.tooling.benchmark.report import (
    finish_rows,
    latency_fields,
    progress_line,
    to_markdown,
    write_plots,
)
from rasa_meta.tooling.benchmark.splits import KNOWN_DATASETS, SHOTS, Split, build_splits
from rasa_meta.training.arguments import arg
from rasa_meta.training.metrics import accuracy, macro_f1

QUICK = {
    "datasets": ["CLINC150"],
    "shots": ["5"],
    "max_intents": 10,
    "max_test": 100,
    "latency_messages": 100,
}

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


@dataclass
class BenchmarkOptions:
    """Everything that defines a run (recorded in results.json); ``rasa-meta benchmark``'s
    flags are generated from these fields."""

    datasets: Optional[List[str]] = arg(
        None, "BANKING77 and/or CLINC150 (default: both, or none when --nlu-train is given).",
        nargs="*",
    )
    nlu_train: Optional[str] = arg(None, "Rasa NLU YAML file to train on.")
    nlu_test: Optional[str] = arg(None, "Rasa NLU YAML file to test on.")
    shots: Optional[List[str]] = arg(
        None, "Examples per intent (default: 5 10 full).", nargs="+", choices=SHOTS
    )
    seeds: Optional[List[int]] = arg(
        None, "Re-sample the 5/10 shots from 'train' with these seeds instead of using the "
        "fixed train_5/train_10 splits.", nargs="+",
    )
    methods: Optional[List[str]] = arg(
        None, f"Subset of: {', '.join(METHODS)} (default: all).", nargs="+"
    )
    encoder: Union[str, Mapping[str, str]] = arg(
        "default", "Encoder of the plugin methods ('default': the shipped meta-trained one; "
        "'minilm': the frozen base model; or a checkpoint directory). Repeat as "
        "DATASET=ENCODER to give each dataset its own, e.g. an encoder meta-trained without "
        "it (default: default).", action="append", metavar="[DATASET=]ENCODER",
    )
    diet_max_train: Optional[int] = arg(
        None, "Skip DIET on training splits of more than N examples (its 100 epochs take hours "
        "on the full splits on a CPU); the table shows an estimate instead.", metavar="N",
    )
    output_dir: str = arg("benchmark_results", "Where results.json, results.md and the plots go.")
    quick: bool = arg(
        False, "Small subset that runs in minutes on a CPU: CLINC150, 10 intents, train_5, "
        "100 test messages."
    )
    max_intents: Optional[int] = arg(
        None, "Keep this many intents per dataset (a seeded sample)."
    )
    max_test: Optional[int] = arg(
        None, "Keep this many test messages per dataset (a seeded sample)."
    )
    latency_messages: Optional[int] = arg(
        None, "Test messages timed one at a time (default 200; 100 with --quick)."
    )
    warmup_messages: int = arg(10, "Messages parsed before the timed ones.")
    batch_size: int = arg(64, "Messages per batch for the throughput column.")
    in_process: bool = arg(
        False, "Run every method in this process instead of one child process each (peak RSS "
        "is then cumulative)."
    )
    data_root: Optional[str] = arg(None, "Folder holding the corpora.")
    show_child_output: bool = arg(False, "Child processes print instead of logging to a file.",
                                  cli=False)
    command: Optional[str] = arg(None, "The command line recorded in the results.", cli=False)

    def resolved(self) -> BenchmarkOptions:
        """The options with ``quick``'s presets and the defaults filled in."""
        preset: Dict[str, Any] = QUICK if self.quick else {}
        datasets = self.datasets
        if datasets is None:
            datasets = preset.get("datasets") or ([] if self.nlu_train else list(KNOWN_DATASETS))
        methods = list(self.methods or METHODS)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"Unknown methods {unknown}; choose from {list(METHODS)}.")
        return dataclasses.replace(
            self,
            datasets=list(datasets),
            shots=[str(s) for s in (self.shots or preset.get("shots") or SHOTS)],
            methods=methods,
            max_intents=self.max_intents if self.max_intents is not None
            else preset.get("max_intents"),
            max_test=self.max_test if self.max_test is not None else preset.get("max_test"),
            latency_messages=self.latency_messages or preset.get("latency_messages") or 200,
        )


def machine_info() -> Dict[str, Any]:
    from importlib import metadata

    import torch

    from rasa_meta.runtime.device import resolve_device

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


def run_benchmark(options: Optional[BenchmarkOptions] = None, **overrides: Any) -> Dict[str, Any]:
    """Run every method on every split; write results.json, results.md and plots.

    Takes :class:`BenchmarkOptions`, or its fields as keyword arguments. ``encoder`` is one
    encoder for every dataset or a mapping ``{dataset: encoder}`` with ``"*"`` for the rest
    (see ``parse_encoder_specs``). ``quick`` fills the options left as ``None`` with a small
    subset (CLINC150, 10 intents, ``train_5``, 100 test messages). ``diet_max_train`` skips DIET
    on larger training splits (100 epochs of DIET on a 15k-example split take hours on a CPU);
    a skipped row carries the reason and a train-time estimate from this run's own DIET rows.
    ``results.json`` is rewritten after every run, so an interrupted benchmark keeps what it
    measured. Returns ``{"run": {...}, "rows": [...]}``.
    """
    opts = dataclasses.replace(options or BenchmarkOptions(), **overrides).resolved()
    out = Path(opts.output_dir)
    splits = build_splits(opts.datasets, opts.shots, opts.seeds,
                          Path(opts.data_root) if opts.data_root else None,
                          opts.nlu_train, opts.nlu_test, opts.max_intents, opts.max_test)
    if not splits:
        raise ValueError("Nothing to run: no datasets given.")
    if any(m in (PLUGIN, PLUGIN_MATCHING) for m in opts.methods):
        for name in dict.fromkeys(split.dataset for split in splits):
            _check_encoder(encoder_for(opts.encoder, name))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    run_info = _run_info(opts, splits)
    jobs = plan_jobs(opts, splits)
    rows: List[Dict[str, Any]] = []
    started = time.perf_counter()
    bar = tqdm(jobs, desc="benchmark", unit="run")
    for split, job in bar:
        bar.set_postfix_str(f"{split.dataset} {split.shots}-shot "
                            f"seed={'fixed' if split.seed is None else split.seed} "
                            f"{job['method']}")
        rows.append(_run_one(split, job, out, opts))
        run_info["complete"] = len(rows) == len(jobs)
        run_info["wall_s"] = time.perf_counter() - started
        finish_rows(rows)
        (out / "results.json").write_text(json.dumps({"run": run_info, "rows": rows}, indent=2)
                                          + "\n", encoding="utf-8")
    result: Dict[str, Any] = {"run": run_info, "rows": rows}
    (out / "results.md").write_text(to_markdown(result), encoding="utf-8")
    result["plots"] = [str(p) for p in write_plots(rows, out)]
    return result


def _run_info(opts: BenchmarkOptions, splits: List[Split]) -> Dict[str, Any]:
    info = machine_info()
    encoder = opts.encoder
    info.update({
        "command": opts.command or " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "encoder": _describe_encoders(encoder),
        "encoders": ({"*": encoder} if isinstance(encoder, str) else dict(encoder)),
        "frozen_encoder": FROZEN_ENCODER,
        "diet_max_train": opts.diet_max_train,
        "quick": opts.quick,
        "seeds": list(opts.seeds) if opts.seeds is not None else None,
        "isolated_processes": not opts.in_process,
        "batch_size": opts.batch_size,
        "warmup_messages": opts.warmup_messages,
        "throughput_mode": THROUGHPUT_MODE.format(batch=opts.batch_size),
        "diet_config": rasa_config(DIET, "default"),
        "plugin_config": rasa_config(PLUGIN, encoder_for(encoder, splits[0].dataset)),
    })
    return info


def plan_jobs(opts: BenchmarkOptions, splits: List[Split]) -> List[Tuple[Split, Dict[str, Any]]]:
    """Every method on every split, the same latency sample for every method of a split, and
    one bare encoder forward per dataset."""
    jobs: List[Tuple[Split, Dict[str, Any]]] = []
    bare_done = set()
    for split in splits:
        order = list(range(len(split.test)))
        random.Random(0).shuffle(order)
        sample = [split.test.texts[i] for i in order[: opts.latency_messages]]
        plugin_encoder = encoder_for(opts.encoder, split.dataset)
        common = {"latency_texts": sample, "warmup": opts.warmup_messages,
                  "batch_size": opts.batch_size, "encoder": plugin_encoder}
        if split.dataset not in bare_done and any(m.startswith(PLUGIN) for m in opts.methods):
            bare_done.add(split.dataset)
            jobs.append((split, dict(common, method=BARE_FORWARD)))
        for method in opts.methods:
            job = dict(common, method=method, train_texts=split.train.texts,
                       train_labels=split.train.labels, test_texts=split.test.texts)
            if method in RASA_METHODS:
                job["config"] = rasa_config(method, plugin_encoder)
            limit = opts.diet_max_train
            if method == DIET and limit is not None and len(split.train) > limit:
                job["skip"] = (f"not run: {len(split.train)} training examples > "
                               f"--diet-max-train {limit}")
            jobs.append((split, job))
    return jobs


def _run_one(split: Split, job: Dict[str, Any], out: Path, opts: BenchmarkOptions
             ) -> Dict[str, Any]:
    """Run one job (in its own process unless ``in_process``) and make its row."""
    method = job["method"]
    tag = f"{split.dataset}_{split.shots}_{split.seed if split.seed is not None else 'fixed'}"
    safe = method.replace("[", "-").replace("]", "")
    log_file = None if opts.show_child_output else out / "logs" / f"{tag}_{safe}.log"
    if log_file is not None and log_file.exists():
        log_file.unlink()
    wall = time.perf_counter()
    if "skip" in job:
        result: Dict[str, Any] = {}
    else:
        with tempfile.TemporaryDirectory(prefix="rasa-meta-bench-") as tmp:
            result = run_isolated(job, Path(tmp), log_file, not opts.in_process)
    row = make_row(split, job, result, time.perf_counter() - wall, log_file)
    if row["error"]:
        tqdm.write(f"[benchmark] {split.dataset} {split.shots} {method} failed: "
                   f"{row['error']} (log: {log_file})")
    elif row["skipped"]:
        tqdm.write(f"[benchmark] {split.dataset} {split.shots} {method} {row['skipped']}")
    else:
        tqdm.write(progress_line(row))
    return row


def make_row(split: Split, job: Dict[str, Any], result: Dict[str, Any], wall: float,
             log_file: Optional[Path]) -> Dict[str, Any]:
    """One row of results.json from a job's result."""
    method = job["method"]
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
        row.update(latency_fields(result["latencies"]))
    if "predictions" in result:
        row["accuracy"] = accuracy(split.test.labels, result["predictions"])
        row["macro_f1"] = macro_f1(split.test.labels, result["predictions"])
        row["batch_msgs_per_s"] = len(split.test) / max(result["batch_s"], 1e-9)
        row["train_s"] = result["train_s"]
        row["load_s"] = result.get("load_s")
    return row

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
and TensorFlow's memory is given back between methods (no module of this package imports torch
or Rasa at the top, so a DIET child never loads torch). Results go to ``results.json``,
``results.md`` and PNG plots; see ``docs/benchmark.md`` for what each column means.

The package: ``splits`` (the train/test pairs), ``methods`` (one runner per method, in a
table), ``isolation`` (the child processes), ``report`` (derived columns, tables, plots) and
``run`` (the options and the run itself).
"""

from rasa_meta.tooling.benchmark.methods import (
    BARE_FORWARD,
    CENTROID,
    DIET,
    DIET_PIPELINE,
    FROZEN_ENCODER,
    LOGREG,
    METHODS,
    PLUGIN,
    PLUGIN_MATCHING,
    RASA_METHODS,
    RUNNERS,
    THROUGHPUT_MODE,
    rasa_config,
)
from rasa_meta.tooling.benchmark.report import add_ratios, finish_rows, to_markdown, write_plots
from rasa_meta.tooling.benchmark.run import (
    QUICK,
    BenchmarkOptions,
    EncoderSpec,
    encoder_for,
    machine_info,
    parse_encoder_specs,
    run_benchmark,
)
from rasa_meta.tooling.benchmark.splits import (
    FIXED_SPLITS,
    KNOWN_DATASETS,
    SHOTS,
    Split,
    build_splits,
)

__all__ = [
    "BARE_FORWARD", "CENTROID", "DIET", "DIET_PIPELINE", "FIXED_SPLITS", "FROZEN_ENCODER",
    "KNOWN_DATASETS", "LOGREG", "METHODS", "PLUGIN", "PLUGIN_MATCHING", "QUICK", "RASA_METHODS",
    "RUNNERS", "SHOTS", "THROUGHPUT_MODE", "BenchmarkOptions", "EncoderSpec", "Split",
    "add_ratios", "build_splits", "encoder_for", "finish_rows", "machine_info",
    "parse_encoder_specs", "rasa_config", "run_benchmark", "to_markdown", "write_plots",
]

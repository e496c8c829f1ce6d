"""Intent-overlap report: where a bot's training data confuses the few-shot classifier.

Everything works on unit-length sentence embeddings (the encoder's output), free of Rasa:

- **similar intents**: pairs of intents whose prototypes (normalised mean embeddings, the
  prototype head's view of an intent) are close in cosine similarity;
- **misplaced examples**: examples nearer to another intent's prototype than to their own,
  where the own prototype is rebuilt without the example (leave-one-out), so an example
  cannot vote for itself; intents with a single example are skipped here;
- **near-duplicates**: pairs of examples under different intents that are almost the same
  vector, or the same text once case, whitespace and surrounding punctuation are ignored;
- **too few examples**: intents with fewer examples than ``min_examples``.

The package: ``analysis`` (the findings, :func:`build_overlap_report`, and the warnings
logged at `rasa train`), ``text`` (warning lines and tables) and ``heatmap`` (the PNG).
"""


from rasa_meta.tooling.nlu_text import normalise_text  # the rule check-data and the inbox share
from rasa_meta.tooling.overlap.analysis import (
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_MIN_EXAMPLES,
    DEFAULT_SIMILARITY_THRESHOLD,
    DEFAULT_TOP_PAIRS,
    MAX_DUPLICATES,
    DuplicatePair,
    IntentPair,
    MisplacedExample,
    OverlapReport,
    OverlapSettings,
    build_overlap_report,
    training_warnings,
)
from rasa_meta.tooling.overlap.heatmap import save_heatmap, similarity_order

__all__ = [
    "DEFAULT_DUPLICATE_THRESHOLD", "DEFAULT_MIN_EXAMPLES", "DEFAULT_SIMILARITY_THRESHOLD",
    "DEFAULT_TOP_PAIRS", "MAX_DUPLICATES", "DuplicatePair", "IntentPair", "MisplacedExample",
    "OverlapReport", "OverlapSettings", "build_overlap_report", "normalise_text",
    "save_heatmap", "similarity_order", "training_warnings",
]

"""rasa-meta: few-shot intent classification for Rasa with a meta-trained encoder."""
__version__ = "0.1.0"

from typing import Any

__all__ = ["MetaIntentClassifier", "MetaResponseSelector", "__version__"]


def __getattr__(name: str) -> Any:
    # Rasa resolves `rasa_meta.MetaIntentClassifier` by attribute; importing the component
    # imports Rasa and TensorFlow, so only do it when asked for (the torch core stays light).
    if name == "MetaIntentClassifier":
        from rasa_meta.component import MetaIntentClassifier

        return MetaIntentClassifier
    if name == "MetaResponseSelector":
        from rasa_meta.selector import MetaResponseSelector

        return MetaResponseSelector
    raise AttributeError(f"module 'rasa_meta' has no attribute {name!r}")

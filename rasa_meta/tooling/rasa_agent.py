"""A trained Rasa model loaded the way ``rasa run`` loads it, for the tools that parse with one."""

from __future__ import annotations

from typing import Any


def configure_like_rasa_cli() -> None:
    """Logging and TensorFlow set up as ``rasa train``/``rasa run`` do (rasa/__main__.py).

    Without it structlog prints every parse at debug level (and benchmarks would time that).
    """
    import rasa.utils.io
    import rasa.utils.tensorflow.environment as tf_env
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.log_utils import configure_structlog

    configure_logging_and_warnings(None, None, warn_only_once=True, filter_repeated_logs=True)
    tf_env.setup_tf_environment()
    rasa.utils.io.configure_colored_logging(None)
    configure_structlog(None)


def load_agent(model_path: str) -> Any:
    """``rasa.core.agent.Agent`` for a model archive, with Rasa's CLI logging set-up."""
    configure_like_rasa_cli()
    from rasa.core.agent import Agent

    return Agent.load(str(model_path))

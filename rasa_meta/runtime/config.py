"""The classifier's options: one dataclass, its allowed values, and one parse-and-validate entry.

``FewShotConfig`` holds the component's config keys one to one; :func:`parse_config` turns a
config dict (as Rasa passes it) into a checked ``FewShotConfig``, raising
:class:`~rasa_meta.runtime.errors.InvalidOptionError` with the key at fault and what it accepts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any, Dict, Iterable, Optional, Union

from rasa_meta.runtime.device import check_device
from rasa_meta.runtime.encoder import DEFAULT_ENCODER, resolve_encoder
from rasa_meta.runtime.errors import EncoderNotFoundError, InvalidOptionError
from rasa_meta.runtime.heads import FALLBACK_TEMPERATURE, HEAD_TYPES, encoder_temperature  # noqa: F401
from rasa_meta.runtime.in_scope import OOS_METHODS
from rasa_meta.runtime.retrieval import DELIMITER
from rasa_meta.runtime.traffic_share import DEFAULT_OUT_OF_SCOPE_SHARE

# Episode objectives of meta-training and of the inner loop at `rasa train`.
OBJECTIVES = ("prototypical", "contrastive", "both")
# Where the in-scope calibration is measured after the inner loop (see FewShotConfig).
OOS_CALIBRATIONS = ("held_out", "leave_one_out")


@dataclass
class FewShotConfig:
    """Training arguments of the classifier; the component's config keys, one to one."""

    encoder: str = DEFAULT_ENCODER
    # Text put before every message and example: None takes the encoder's default prompt (a
    # sentence-transformers model may declare one), a name picks one of its prompts (e.g.
    # "query"), other text is the prefix itself, "" none.
    encoder_prompt: Optional[str] = None
    max_length: int = 128
    batch_size: int = 64
    device: str = "auto"
    head: str = "prototype"
    temperature: Optional[float] = None  # None: the scale learned in meta-training
    head_steps: int = 100  # Proto-MAML-style refinement of the head (seconds, no encoder)
    head_learning_rate: float = 0.01
    # Inner loop: fine-tuning the encoder on the bot's own examples. One epoch over every
    # block at 1e-4 was chosen on the BANKING77 / CLINC150 valid splits (docs/meta-learning.md).
    epochs: int = 1
    finetune_layers: int = -1  # top transformer blocks trained; -1: all (embeddings frozen)
    finetune_learning_rate: float = 1e-4
    finetune_objective: str = "both"  # prototypical | contrastive | both (see losses.py)
    # "learned": the in-scope scorer meta-trained with the encoder (true: that, or
    # "similarity" for an encoder that ships none); "similarity": the leave-one-out rule.
    out_of_scope_detection: Union[bool, str] = True
    oos_quantile: float = 0.05
    # How the in-scope score's scale is measured when the inner loop runs: "leave_one_out"
    # scores the adapted examples themselves, each as if new; "held_out" adapts a copy of the
    # encoder without one example per intent and scores those (the inner loop runs twice).
    # Chosen on valid (docs/results/out_of_scope/oos_evidence.md): at the 0.4 threshold
    # leave-one-out cost more
    # than 3 points of in-scope accuracy on 3 of 15 tasks, held-out (one example per intent:
    # a small, noisy sample) on 8, so leave-one-out is the default, at no extra train time.
    oos_calibration: str = "leave_one_out"
    # Share of the bot's traffic that is out of scope: the learned confidence is the
    # probability that the top intent is right for such traffic, so FallbackClassifier 0.5
    # fits (runtime/traffic_share.py). The default assumes customer-service traffic (36-69 %
    # out of scope); `rasa-meta calibrate` estimates a bot's own share from its traffic.
    out_of_scope_share: float = DEFAULT_OUT_OF_SCOPE_SHARE
    # The bot's intent for out-of-scope messages, e.g. "out_of_scope" (its response keys too,
    # out_of_scope/...): the in-scope score is calibrated on the other intents, and this
    # intent takes the probability of being out of scope (runtime/out_of_scope_intent.py).
    # None or "": an intent like any other. Off by default: on the two real bots and CLINC150
    # it traded in-scope accuracy for out-of-scope recall at a fixed threshold, and ranked
    # answers no better (docs/results/out_of_scope/README.md#a-bots-own-out_of_scope-intent).
    out_of_scope_intent: Optional[str] = None
    # Intent names as support: each intent's name in words (check_order_status -> "check
    # order status") or its description counts as this many examples in its prototype and
    # refined head; 0 off. 1 was chosen on the valid splits of five corpora
    # (docs/results/label_names/).
    label_name_weight: float = 1.0
    # Descriptions by intent, e.g. for an intent with no examples (known by it alone); an
    # intent's `metadata: {description: ...}` in the NLU data is read as well.
    intent_descriptions: Optional[Dict[str, str]] = None
    random_seed: int = 42
    # Intra-op CPU threads when the model is loaded for serving: "auto" (1 per process) or N.
    num_threads: Union[str, int] = "auto"

    @classmethod
    def from_dict(cls, config: Dict[str, Any]) -> FewShotConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    @classmethod
    def check_keys(
        cls,
        config: Dict[str, Any],
        extra_allowed: Iterable[str] = (),
        ignored: Iterable[str] = (),
    ) -> None:
        """Raise InvalidOptionError for the first key of ``config`` that is no option.

        Valid: this dataclass's fields and ``extra_allowed`` (both suggested for a typo), and
        ``ignored`` (keys a caller adds itself, never suggested). The message names the key
        and the closest valid option, e.g. ``unknown option 'epoch'; did you mean 'epochs'?``.
        """
        options = [f.name for f in fields(cls)] + [k for k in extra_allowed]
        accepted = set(options) | set(ignored)
        for key in config:
            if key in accepted:
                continue
            close = difflib.get_close_matches(str(key), options, n=1)
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else f"the options are {', '.join(sorted(options))}."
            )
            raise InvalidOptionError(f"unknown option '{key}'; {hint}")

    def validate(self, check_encoder: bool = True) -> None:
        """Raise InvalidOptionError naming the option at fault and what it accepts.

        ``check_encoder``: also check that ``encoder`` resolves from the current directory.
        """
        check_device(self.device)
        for key in ("epochs", "head_steps"):
            _check_whole(key, getattr(self, key), minimum=0)
        for key in ("max_length", "batch_size"):
            _check_whole(key, getattr(self, key), minimum=1)
        for key in ("head_learning_rate", "finetune_learning_rate"):
            value = getattr(self, key)
            if not _is_number(value) or value <= 0:
                raise InvalidOptionError(f"'{key}' must be a positive number, got {value!r}.")
        if self.finetune_objective not in OBJECTIVES:
            raise InvalidOptionError(
                f"'finetune_objective' must be one of {list(OBJECTIVES)}, got "
                f"{self.finetune_objective!r}."
            )
        layers = self.finetune_layers
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < -1:
            raise InvalidOptionError(
                f"'finetune_layers' must be a whole number >= 0, or -1 for every transformer "
                f"block; got {layers!r}."
            )
        if self.head not in HEAD_TYPES:
            raise InvalidOptionError(
                f"'head' must be one of {list(HEAD_TYPES)}, got {self.head!r}."
            )
        temperature = self.temperature
        if temperature is not None and not (_is_number(temperature) and temperature > 0):
            raise InvalidOptionError(
                f"'temperature' must be a positive number, or null to use the encoder's "
                f"learned scale; got {temperature!r}."
            )
        if self.encoder_prompt is not None and not isinstance(self.encoder_prompt, str):
            raise InvalidOptionError(
                f"'encoder_prompt' must be text (a prompt name the encoder declares, or the "
                f"prefix itself) or null; got {self.encoder_prompt!r}."
            )
        detection = self.out_of_scope_detection
        if detection not in (True, False, *OOS_METHODS):
            raise InvalidOptionError(
                f"'out_of_scope_detection' must be true (the learned score where the encoder "
                f"ships one), false, 'learned' or 'similarity'; got {detection!r}."
            )
        if self.oos_calibration not in OOS_CALIBRATIONS:
            raise InvalidOptionError(
                f"'oos_calibration' must be one of {list(OOS_CALIBRATIONS)}, got "
                f"{self.oos_calibration!r}."
            )
        quantile = self.oos_quantile
        if not (_is_number(quantile) and 0 < quantile < 0.5):
            raise InvalidOptionError(f"'oos_quantile' must be between 0 and 0.5, got {quantile!r}.")
        share = self.out_of_scope_share
        if not (_is_number(share) and 0 < share < 1):
            raise InvalidOptionError(
                f"'out_of_scope_share' must be a number between 0 and 1 (the share of the "
                f"bot's messages that are out of scope), got {share!r}."
            )
        intent = self.out_of_scope_intent
        if intent is not None and not (isinstance(intent, str) and DELIMITER not in intent):
            raise InvalidOptionError(
                f"'out_of_scope_intent' must be the name of the bot's intent for out-of-scope "
                f"messages, not a response key (its keys, e.g. out_of_scope/other, count with "
                f"it), or null to treat it like any other intent; got {intent!r}."
            )
        weight = self.label_name_weight
        if not (_is_number(weight) and weight >= 0):
            raise InvalidOptionError(
                f"'label_name_weight' must be a number >= 0 (0 leaves intent names out), got "
                f"{weight!r}."
            )
        descriptions = self.intent_descriptions
        if descriptions is not None and not (
            isinstance(descriptions, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in descriptions.items())
        ):
            raise InvalidOptionError(
                f"'intent_descriptions' must map intent names to text, e.g. "
                f"{{check_balance: 'the customer asks how much money is on an account'}}; got "
                f"{descriptions!r}."
            )
        threads = self.num_threads
        if threads != "auto" and (
            not isinstance(threads, int) or isinstance(threads, bool) or threads < 1
        ):
            raise InvalidOptionError(
                f"'num_threads' must be 'auto' or a whole number >= 1, got {threads!r}."
            )
        if check_encoder:
            try:
                resolve_encoder(self.encoder)
            except EncoderNotFoundError as e:
                raise InvalidOptionError(
                    f"{e} Set 'encoder' to an existing model directory, a Hugging Face model "
                    f"name, or 'default' for the meta-trained encoder shipped with rasa-meta."
                ) from e


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_whole(key: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidOptionError(f"'{key}' must be a whole number >= {minimum}, got {value!r}.")


def parse_config(
    config: Dict[str, Any],
    extra_allowed: Iterable[str] = (),
    ignored: Iterable[str] = (),
    check_encoder: bool = True,
) -> FewShotConfig:
    """The checked :class:`FewShotConfig` of a config dict: unknown keys (``extra_allowed``
    are known too, ``ignored`` are skipped) and bad values raise InvalidOptionError."""
    FewShotConfig.check_keys(config, extra_allowed, ignored)
    parsed = FewShotConfig.from_dict(config)
    parsed.validate(check_encoder=check_encoder)
    return parsed

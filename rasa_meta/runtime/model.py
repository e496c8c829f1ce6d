"""The few-shot intent model, free of Rasa: encoder (body) + head + out-of-scope calibrator.

``FewShotIntentModel.fit`` adapts to a bot's examples; ``predict`` returns calibrated
confidences; ``save``/``load`` write everything to one directory.
"""

from __future__ import annotations

import difflib
import json
import logging
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from safetensors.torch import load_file, save_file

from rasa_meta import __version__
from rasa_meta.runtime.device import check_device, resolve_device
from rasa_meta.runtime.encoder import (
    DEFAULT_ENCODER,
    EncoderNotFoundError,
    SentenceEncoder,
    apply_delta,
    compute_encoder_fingerprint,
    resolve_encoder,
    same_encoder,
    trainable_state,
)
from rasa_meta.runtime.heads import HEAD_TYPES, PrototypeHead, make_head
from rasa_meta.runtime.in_scope import (
    OOS_METHODS,
    HeldOutScores,
    InScopeConfigError,
    InScopeEstimator,
    InScopeScorer,
    SimilarityCalibrator,
)
from rasa_meta.runtime.traffic_share import DEFAULT_OUT_OF_SCOPE_SHARE

logger = logging.getLogger(__name__)

HEAD_FILE = "head.safetensors"
# the trained model's changed encoder blocks (not the encoder checkpoint's DELTA_FILE)
MODEL_DELTA_FILE = "encoder_delta.safetensors"
MODEL_FILE = "model.json"
FALLBACK_TEMPERATURE = 0.05
# Layout of a saved model directory, "major.minor". Bump the minor for additions older code
# can ignore, the major for changes it cannot read. Files without it predate the field: 1.0.
FORMAT_VERSION = "1.0"
RETRAIN_HINT = "Retrain the model with `rasa train`."

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
    # Chosen on valid (docs/oos_evidence.md): at the 0.4 threshold leave-one-out cost more
    # than 3 points of in-scope accuracy on 3 of 15 tasks, held-out (one example per intent:
    # a small, noisy sample) on 8, so leave-one-out is the default, at no extra train time.
    oos_calibration: str = "leave_one_out"
    # Share of the bot's traffic that is out of scope: the learned confidence is the
    # probability that the top intent is right for such traffic, so FallbackClassifier 0.5
    # fits (runtime/traffic_share.py). The default assumes customer-service traffic (36-69 %
    # out of scope); `rasa-meta calibrate` estimates a bot's own share from its traffic.
    out_of_scope_share: float = DEFAULT_OUT_OF_SCOPE_SHARE
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
        """Raise ValueError for the first key of ``config`` that is no option.

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
            raise ValueError(f"unknown option '{key}'; {hint}")

    def validate(self, check_encoder: bool = True) -> None:
        """Raise ValueError naming the option at fault and what it accepts.

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
                raise ValueError(f"'{key}' must be a positive number, got {value!r}.")
        if self.finetune_objective not in OBJECTIVES:
            raise ValueError(
                f"'finetune_objective' must be one of {list(OBJECTIVES)}, got "
                f"{self.finetune_objective!r}."
            )
        layers = self.finetune_layers
        if not isinstance(layers, int) or isinstance(layers, bool) or layers < -1:
            raise ValueError(
                f"'finetune_layers' must be a whole number >= 0, or -1 for every transformer "
                f"block; got {layers!r}."
            )
        if self.head not in HEAD_TYPES:
            raise ValueError(f"'head' must be one of {list(HEAD_TYPES)}, got {self.head!r}.")
        temperature = self.temperature
        if temperature is not None and not (_is_number(temperature) and temperature > 0):
            raise ValueError(
                f"'temperature' must be a positive number, or null to use the encoder's "
                f"learned scale; got {temperature!r}."
            )
        if self.encoder_prompt is not None and not isinstance(self.encoder_prompt, str):
            raise ValueError(
                f"'encoder_prompt' must be text (a prompt name the encoder declares, or the "
                f"prefix itself) or null; got {self.encoder_prompt!r}."
            )
        detection = self.out_of_scope_detection
        if detection not in (True, False, *OOS_METHODS):
            raise ValueError(
                f"'out_of_scope_detection' must be true (the learned score where the encoder "
                f"ships one), false, 'learned' or 'similarity'; got {detection!r}."
            )
        if self.oos_calibration not in OOS_CALIBRATIONS:
            raise ValueError(
                f"'oos_calibration' must be one of {list(OOS_CALIBRATIONS)}, got "
                f"{self.oos_calibration!r}."
            )
        quantile = self.oos_quantile
        if not (_is_number(quantile) and 0 < quantile < 0.5):
            raise ValueError(f"'oos_quantile' must be between 0 and 0.5, got {quantile!r}.")
        share = self.out_of_scope_share
        if not (_is_number(share) and 0 < share < 1):
            raise ValueError(
                f"'out_of_scope_share' must be a number between 0 and 1 (the share of the "
                f"bot's messages that are out of scope), got {share!r}."
            )
        threads = self.num_threads
        if threads != "auto" and (
            not isinstance(threads, int) or isinstance(threads, bool) or threads < 1
        ):
            raise ValueError(
                f"'num_threads' must be 'auto' or a whole number >= 1, got {threads!r}."
            )
        if check_encoder:
            try:
                resolve_encoder(self.encoder)
            except EncoderNotFoundError as e:
                raise ValueError(
                    f"{e} Set 'encoder' to an existing model directory, a Hugging Face model "
                    f"name, or 'default' for the meta-trained encoder shipped with rasa-meta."
                ) from e


def encoder_temperature(metadata: Dict[str, Any]) -> float:
    """Softmax temperature over cosine similarity: the inverse of the scale meta-training
    learned (in the encoder's metadata), else :data:`FALLBACK_TEMPERATURE`."""
    scale = metadata.get("similarity_scale")
    return 1.0 / float(scale) if scale else FALLBACK_TEMPERATURE


def held_out_split(labels: Sequence[str], seed: int) -> List[int]:
    """Indices of one example drawn (seeded) from every intent that has two or more."""
    groups: Dict[str, List[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    rng = random.Random(seed)
    return sorted(rng.choice(idx) for _, idx in sorted(groups.items()) if len(idx) >= 2)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_whole(key: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"'{key}' must be a whole number >= {minimum}, got {value!r}.")


class FewShotIntentModel:
    """Encoder + head: adapts to labelled texts, predicts intent distributions."""

    def __init__(self, config: FewShotConfig, encoder: Optional[SentenceEncoder] = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self._encoder = encoder
        self.head: Optional[PrototypeHead] = None
        self.in_scope = InScopeEstimator()
        self.texts: List[str] = []
        self.delta: Dict[str, torch.Tensor] = {}
        # Where the encoder is loaded from: the absolute directory (or hub name) that
        # ``config.encoder`` resolved to. Set when the encoder is loaded, or by ``load`` to the
        # location recorded at training time when ``config.encoder`` is relative.
        self.encoder_path: Optional[str] = None
        # How examples score under an encoder adapted without them (set by ``fit``).
        self.held_out: Optional[HeldOutScores] = None

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            if self.encoder_path is None:
                self.encoder_path = resolve_encoder(self.config.encoder)
            self._encoder = SentenceEncoder.from_pretrained(
                self.encoder_path, self.config.max_length, self.config.encoder_prompt
            )
            self._encoder.to(self.device)
        return self._encoder

    @property
    def temperature(self) -> float:
        if self.config.temperature is not None:
            return float(self.config.temperature)
        return encoder_temperature(self.encoder.metadata)

    @property
    def labels(self) -> List[str]:
        return self.head.labels if self.head is not None else []

    @property
    def is_trained(self) -> bool:
        return self.head is not None and len(self.head.labels) > 0

    def _require_fitted(self, what: str) -> None:
        # a real error, not an assert: `python -O` strips asserts, and callers outside the
        # package reach these methods
        if self.head is None:
            raise RuntimeError(f"{what} needs a fitted model: call fit() or load() first.")

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(list(texts), batch_size=self.config.batch_size)

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> FewShotIntentModel:
        """Adapt to the examples: optional inner-loop fine-tuning, then prototypes."""
        texts, labels = list(texts), list(labels)
        self.held_out = None
        if self.config.epochs > 0:
            if self.config.oos_calibration == "held_out" and self.in_scope_method() != "off":
                self.held_out = self._held_out_scores(texts, labels)
            changed = self._finetune(texts, labels)
            if changed:  # stored in float16: the inner loop already rounded them to it
                self.delta = {
                    k: v.half() for k, v in trainable_state(self.encoder.model, changed).items()
                }
        return self.fit_embeddings(self.embed(texts), labels, texts)

    def _finetune(self, texts: List[str], labels: List[str]) -> List[str]:
        """The inner loop on these examples; the names of the parameters it changed."""
        # training code is imported only when a bot is trained, never when one is served
        from rasa_meta.training.inner_loop import finetune_encoder

        return finetune_encoder(
            self.encoder,
            texts,
            labels,
            epochs=self.config.epochs,
            learning_rate=self.config.finetune_learning_rate,
            train_layers=self.config.finetune_layers,
            objective=self.config.finetune_objective,
            init_scale=1.0 / self.temperature,
            seed=self.config.random_seed,
        )

    def _held_out_scores(self, texts: List[str], labels: List[str]) -> Optional[HeldOutScores]:
        """Adapt a copy of the encoder without one example of each intent (of intents with 2+)
        and score those examples as new messages: the in-scope calibration of the real run."""
        held = held_out_split(labels, self.config.random_seed)
        if len(held) < 2:
            return None
        held_set = set(held)
        rest = [i for i in range(len(texts)) if i not in held_set]
        model = self.encoder.model
        original = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            self._finetune([texts[i] for i in rest], [labels[i] for i in rest])
            emb = self.embed(texts)
        finally:
            model.load_state_dict(original)
        head = make_head(self.config.head, self.temperature).fit(
            emb[rest], [labels[i] for i in rest])
        head.refine(self.config.head_steps, self.config.head_learning_rate)
        return HeldOutScores.of(head, emb[held], [labels[i] for i in held])

    def fit_embeddings(
        self, embeddings: torch.Tensor, labels: Sequence[str], texts: Sequence[str]
    ) -> FewShotIntentModel:
        """Build the head and the out-of-scope calibrator from ready-made embeddings."""
        self.texts = list(texts)
        self.head = make_head(self.config.head, self.temperature).fit(embeddings, list(labels))
        self.head.refine(self.config.head_steps, self.config.head_learning_rate)
        self.in_scope = self.fit_in_scope(self.in_scope_method())
        return self

    def fit_in_scope(self, method: str) -> InScopeEstimator:
        """The in-scope estimator ``method`` gives with the fitted head (and the held-out
        calibration, when the inner loop measured one)."""
        self._require_fitted("fit_in_scope()")
        return InScopeEstimator.fit(
            self.head, method, self.config.oos_quantile, self._scorer(),
            self.held_out, float(self.config.out_of_scope_share),
        )

    def predict(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Confidences (n, intents), in-scope probability (n,), similarities (n, intents).

        Confidence = p(intent | in scope) * p(in scope): rows sum to the in-scope
        probability, which is 1 for messages as close to an intent as its typical example.
        """
        self._require_fitted("predict()")
        confidences, in_scope, sims = self.predict_embeddings(self.embed(texts))
        confidences, in_scope = self.withhold_unreadable(texts, confidences, in_scope)
        return confidences, in_scope, sims

    def withhold_unreadable(
        self, texts: Sequence[str], confidences: torch.Tensor, in_scope: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Confidence 0 for every intent of a text made only of tokens the encoder does not
        know (see :meth:`SentenceEncoder.unreadable`): all such texts embed alike, so the
        nearest intent would be a guess, often at high confidence. FallbackClassifier takes
        them."""
        mask = torch.tensor(self.encoder.unreadable(texts), dtype=torch.bool)
        if not bool(mask.any()):
            return confidences, in_scope
        mask = mask.to(confidences.device)
        return (torch.where(mask.unsqueeze(1), torch.zeros_like(confidences), confidences),
                torch.where(mask, torch.zeros_like(in_scope), in_scope))

    def predict_embeddings(
        self, emb: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._require_fitted("predict()")
        sims = self.head.similarities(emb)
        probs = self.head.predict_proba(emb)
        confidences, in_scope = self.in_scope.confidences(self.head, emb, probs, sims)
        return confidences, in_scope, sims

    def _scorer(self) -> Optional[InScopeScorer]:
        """The in-scope scorer meta-trained with this model's encoder, if it ships one."""
        location = self.encoder_path or resolve_encoder(self.config.encoder)
        path = Path(location)
        return InScopeScorer.load(path) if path.is_dir() else None

    def in_scope_method(self) -> str:
        """"learned", "similarity" or "off", from ``out_of_scope_detection``."""
        setting = self.config.out_of_scope_detection
        if setting not in (True, False, *OOS_METHODS):
            raise InScopeConfigError(
                f"out_of_scope_detection must be true, false or one of {list(OOS_METHODS)}, "
                f"got {setting!r}."
            )
        if setting is False:
            return "off"
        if setting is True:
            return "learned" if self._scorer() is not None else "similarity"
        if setting == "learned" and self._scorer() is None:
            raise InScopeConfigError(
                f"out_of_scope_detection 'learned' needs an in-scope scorer trained with the "
                f"encoder '{self.config.encoder}', which has none: train one with `rasa-meta "
                f"train-scorer --encoder {self.config.encoder}`, or set out_of_scope_detection "
                f"to 'similarity'."
            )
        return str(setting)

    def nearest_examples(self, emb: torch.Tensor, intent: str, k: int) -> List[Tuple[str, float]]:
        """The ``k`` training examples of ``intent`` closest to one embedding."""
        self._require_fitted("nearest_examples()")
        target = self.head.labels.index(intent)
        idx = (self.head.support_targets == target).nonzero().flatten()
        sims = self.head.support[idx] @ emb.float()
        top = sims.topk(min(k, len(idx)))
        return [(self.texts[int(idx[i])], float(s)) for s, i in zip(top.values, top.indices)]

    # --- persistence -----------------------------------------------------------------------

    def save(self, directory: Union[str, Path]) -> None:
        self._require_fitted("save()")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()},
                  str(directory / HEAD_FILE))
        if self.delta:
            save_file(self.delta, str(directory / MODEL_DELTA_FILE))
        encoder_path = self.encoder_path or resolve_encoder(self.config.encoder)
        meta = {
            "rasa_meta_version": __version__,
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),  # "encoder" as configured, e.g. a relative path
            "encoder_path": encoder_path,  # where it was: absolute directory, or hub name
            "encoder_fingerprint": compute_encoder_fingerprint(encoder_path),
            "labels": self.head.labels,
            "texts": self.texts,
            "temperature": self.head.temperature,
            "in_scope": self.in_scope.to_dict(),
        }
        (directory / MODEL_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(
        cls, directory: Union[str, Path], config: Optional[FewShotConfig] = None
    ) -> FewShotIntentModel:
        """Read a saved model fully into memory, encoder included, so that serving never
        loads anything per request. ``config`` may override e.g. the device.

        The encoder is ``config.encoder`` as configured at training time; a relative path that
        does not exist from the current directory falls back to the absolute path recorded at
        training time. Its fingerprint must match the one recorded at training time: the
        prototypes, refined head and calibration were fitted on that encoder's embeddings.

        Every failure is a :class:`ModelLoadError` naming the file (or encoder path) at fault.
        """
        directory = Path(directory)
        meta_file = directory / MODEL_FILE
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"Cannot read '{meta_file}': {e}. {RETRAIN_HINT}") from e
        if not isinstance(meta, dict):
            raise ModelLoadError(f"'{meta_file}' is not a rasa-meta model file. {RETRAIN_HINT}")
        check_format(meta, meta_file)
        try:
            saved = FewShotConfig.from_dict(meta["config"])
            labels = [str(label) for label in meta["labels"]]
            texts = [str(text) for text in meta["texts"]]
            temperature = float(meta["temperature"])
            if "in_scope" in meta:
                in_scope = InScopeEstimator.from_dict(meta["in_scope"])
            else:  # saved before the learned scorer: the similarity rule (or off)
                calibrator = SimilarityCalibrator.from_dict(meta["calibrator"])
                method = "similarity" if calibrator.enabled else "off"
                in_scope = InScopeEstimator(method, calibrator=calibrator)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelLoadError(
                f"'{meta_file}' is incomplete or malformed ({type(e).__name__}: {e}). "
                f"{RETRAIN_HINT}"
            ) from e
        if config is not None:
            saved.device = config.device
            saved.batch_size = config.batch_size
            saved.num_threads = config.num_threads
        model = cls(saved)
        state = _read_tensors(directory / HEAD_FILE)
        if (directory / MODEL_DELTA_FILE).is_file():
            model.delta = _read_tensors(directory / MODEL_DELTA_FILE)
        recorded_path = meta.get("encoder_path")
        model.encoder_path = locate_encoder(
            saved.encoder, recorded_path if isinstance(recorded_path, str) else None, directory
        )
        try:
            encoder = model.encoder  # load it now: a missing encoder fails here, not per request
        except EncoderNotFoundError as e:
            raise ModelLoadError(
                f"The model in '{directory}' was trained with the encoder '{saved.encoder}', "
                f"which cannot be loaded: {e} Put that encoder back at '{saved.encoder}', or "
                f"set 'encoder' in config.yml to an encoder that exists and retrain with "
                f"`rasa train`."
            ) from e
        try:
            model.head = make_head(saved.head, temperature).load_state(labels, state)
            support = model.head.support
            if support.dim() != 2 or len(support) != len(model.head.support_targets):
                raise ValueError(f"support tensor of shape {tuple(support.shape)}")
            if len(support) and int(model.head.support_targets.max()) >= len(labels):
                raise ValueError("example labels out of range")
            weights = getattr(model.head, "weights", None)
            if weights is not None and tuple(weights.shape) != (len(labels), support.shape[1]):
                raise ValueError(f"refined head of shape {tuple(weights.shape)}")
        except (KeyError, ValueError, RuntimeError, IndexError) as e:
            raise ModelLoadError(
                f"'{directory / HEAD_FILE}' does not match '{meta_file}' ({e}). {RETRAIN_HINT}"
            ) from e
        if support.shape[1] != encoder.dim:
            raise ModelLoadError(
                f"'{directory / HEAD_FILE}' holds {support.shape[1]}-dimensional embeddings "
                f"but the encoder '{saved.encoder}' makes {encoder.dim}-dimensional ones: the "
                f"encoder was replaced after training. {RETRAIN_HINT}"
            )
        check_encoder_fingerprint(meta.get("encoder_fingerprint"), model.encoder_path, saved,
                                  directory)
        if model.delta:  # after the checks above: a replaced encoder gets their clear message
            try:
                apply_delta(encoder.model, model.delta)
            except (EncoderNotFoundError, RuntimeError) as e:
                raise ModelLoadError(
                    f"'{directory / MODEL_DELTA_FILE}' does not fit the encoder '{saved.encoder}' "
                    f"({e}). {RETRAIN_HINT}"
                ) from e
        model.texts = texts
        model.in_scope = in_scope
        return model


def locate_encoder(configured: str, recorded: Optional[str], directory: Path) -> str:
    """Where to load a saved model's encoder from: ``configured`` resolved from the current
    directory, else ``recorded`` (the absolute path resolved at training time) when
    ``configured`` was a local directory at training time and is not found now."""
    try:
        resolved: Optional[str] = resolve_encoder(configured)
    except EncoderNotFoundError:
        resolved = None
    was_local = recorded is not None and Path(recorded).is_absolute()
    if resolved is not None and (Path(resolved).exists() or not was_local):
        return resolved  # found from here, or a hub name (also one from an older model)
    if was_local and Path(recorded).exists():
        logger.info(
            f"rasa_meta: encoder '{configured}' not found from '{Path.cwd()}'; using "
            f"'{recorded}', where it was when the model was trained."
        )
        return str(recorded)
    if Path(configured).expanduser().is_absolute() or not was_local:
        where = f"Encoder path '{configured}' does not exist."
        fix = (
            f"Put that encoder back at '{configured}', or set 'encoder' in config.yml to an "
            f"encoder that exists and retrain with `rasa train`."
        )
    else:
        where = (
            f"The encoder path '{configured}' exists neither from the current directory "
            f"'{Path.cwd()}' nor at '{recorded}', where it was when the model was trained."
        )
        fix = (
            f"Run `rasa run` from the project directory (where '{configured}' exists), set "
            f"'encoder' in config.yml to an absolute path, or put the encoder back at "
            f"'{recorded}'; or retrain with `rasa train`."
        )
    raise ModelLoadError(
        f"The model in '{directory}' was trained with the encoder '{configured}', which "
        f"cannot be found. {where} {fix}"
    )


def check_encoder_fingerprint(
    saved: Any, encoder_path: Optional[str], config: FewShotConfig, directory: Path
) -> None:
    """Raise a ModelLoadError if the encoder at ``encoder_path`` is not the one the model was
    trained with. Models saved without a fingerprint are not checked."""
    if not isinstance(saved, str) or encoder_path is None:
        return
    try:
        current = compute_encoder_fingerprint(encoder_path)
    except EncoderNotFoundError as e:
        raise ModelLoadError(
            f"Cannot identify the encoder '{config.encoder}' of the model in '{directory}': "
            f"{e} {RETRAIN_HINT}"
        ) from e
    if same_encoder(saved, current):
        return
    raise ModelLoadError(
        f"The encoder '{config.encoder}' (at '{encoder_path}') changed after the model in "
        f"'{directory}' was trained: its fingerprint was {saved} at training time and is "
        f"{current} now. The intent prototypes, the refined head and the out-of-scope "
        f"calibration were fitted on the old encoder's embeddings and would be wrong with "
        f"the new one. Retrain the model with `rasa train` (or put the original encoder back)."
    )


def _read_tensors(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"Model file '{path}' is missing. {RETRAIN_HINT}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ModelLoadError(
            f"Cannot read model file '{path}' (corrupt or truncated?): {e}. {RETRAIN_HINT}"
        ) from e


def _parse_version(value: Any) -> Optional[Tuple[int, int]]:
    try:
        major, minor = str(value).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def check_format(meta: Dict[str, Any], meta_file: Path) -> None:
    """Raise a ModelLoadError naming the rasa-meta version to install if this plugin cannot
    read the saved format: a different major, or a newer minor than :data:`FORMAT_VERSION`."""
    written = meta.get("format_version", "1.0")
    found, ours = _parse_version(written), _parse_version(FORMAT_VERSION)
    assert ours is not None
    if found is not None and found[0] == ours[0] and found[1] <= ours[1]:
        return
    trained_with = meta.get("rasa_meta_version")
    install = (
        f"install rasa-meta=={trained_with} to use it"
        if trained_with
        else "install the rasa-meta version it was trained with"
    )
    raise ModelLoadError(
        f"'{meta_file}' was trained with rasa-meta {trained_with or '(unknown version)'} "
        f"(model format {written}); this is rasa-meta {__version__}, which reads model format "
        f"{ours[0]}.0 to {FORMAT_VERSION}. Either {install}, or retrain the model with "
        f"`rasa train` under rasa-meta {__version__}."
    )


class ModelLoadError(ValueError):
    """A saved model directory is missing a file or holds a corrupt one."""

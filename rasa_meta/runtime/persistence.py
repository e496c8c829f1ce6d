"""A fitted model on disk: what ``save`` writes, and ``load`` reads back and checks.

A model directory holds ``model.json`` (config, labels, texts, temperature, in-scope
estimator, the encoder's location and fingerprint, the format version), ``head.safetensors``
and, when the inner loop changed encoder blocks, ``encoder_delta.safetensors``. Loading finds
the encoder, checks it is the one the model was trained with, and fails with a
:class:`~rasa_meta.runtime.errors.ModelLoadError` naming the file at fault and the fix.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from safetensors.torch import load_file, save_file

from rasa_meta import __version__
from rasa_meta.runtime.config import FewShotConfig
from rasa_meta.runtime.encoder import (
    apply_delta,
    compute_encoder_fingerprint,
    resolve_encoder,
    same_encoder,
)
from rasa_meta.runtime.errors import EncoderNotFoundError, ModelLoadError
from rasa_meta.runtime.heads import make_head
from rasa_meta.runtime.in_scope import InScopeEstimator, SimilarityCalibrator

logger = logging.getLogger(__name__)

HEAD_FILE = "head.safetensors"
# the trained model's changed encoder blocks (not the encoder checkpoint's DELTA_FILE)
MODEL_DELTA_FILE = "encoder_delta.safetensors"
MODEL_FILE = "model.json"
# Layout of a saved model directory, "major.minor". Bump the minor for additions older code
# can ignore, the major for changes it cannot read. Files without it predate the field: 1.0.
FORMAT_VERSION = "1.1"  # 1.1: intent descriptions and name support
RETRAIN_HINT = "Retrain the model with `rasa train`."


def save_model(model: Any, directory: Union[str, Path]) -> None:
    """Write a fitted FewShotIntentModel (``runtime/model.py``, which imports this module) to
    ``directory``: the head, the changed encoder blocks, model.json."""
    model._require_fitted("save()")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()},
              str(directory / HEAD_FILE))
    if model.delta:
        save_file(model.delta, str(directory / MODEL_DELTA_FILE))
    encoder_path = model.encoder_path or resolve_encoder(model.config.encoder)
    meta = {
        "rasa_meta_version": __version__,
        "format_version": FORMAT_VERSION,
        "config": asdict(model.config),  # "encoder" as configured, e.g. a relative path
        "encoder_path": encoder_path,  # where it was: absolute directory, or hub name
        "encoder_fingerprint": compute_encoder_fingerprint(encoder_path),
        "labels": model.head.labels,
        "texts": model.texts,
        "descriptions": model.descriptions,
        "temperature": model.head.temperature,
        "in_scope": model.in_scope.to_dict(),
    }
    (directory / MODEL_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


def load_model(
    cls: Any,
    directory: Union[str, Path],
    config: Optional[FewShotConfig] = None,
) -> Any:
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
        descriptions = {str(k): str(v) for k, v in meta.get("descriptions", {}).items()}
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
    state = read_tensors(directory / HEAD_FILE)
    if (directory / MODEL_DELTA_FILE).is_file():
        model.delta = read_tensors(directory / MODEL_DELTA_FILE)
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
    model.descriptions = descriptions
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


def read_tensors(path: Path) -> Dict[str, torch.Tensor]:
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
    found, ours = _parse_version(written), _parse_version(FORMAT_VERSION) or (1, 0)
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

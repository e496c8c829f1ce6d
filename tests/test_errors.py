"""Every error rasa-meta raises derives from RasaMetaError; file errors are no ValueError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import rasa_meta
from rasa_meta.runtime.errors import (
    EncoderNotFoundError,
    InvalidOptionError,
    ModelLoadError,
    RasaMetaError,
)

# modules that import Rasa (and TensorFlow) are left out: their errors are Rasa's
TORCH_CORE = [
    m.name for m in pkgutil.walk_packages(rasa_meta.__path__, "rasa_meta.")
    if m.name.split(".")[1] in ("runtime", "training", "tooling")
]


def _errors():
    found = {}
    for name in TORCH_CORE:
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Exception) and obj.__module__.startswith("rasa_meta"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_error_of_the_package_is_a_rasa_meta_error():
    errors = _errors()
    assert len(errors) >= 6  # the check sees them
    assert [name for name, cls in errors.items() if not issubclass(cls, RasaMetaError)] == []


def test_errors_about_files_are_not_value_errors():
    # component.load catches Rasa's ValueError for a missing resource; a corrupt model or a
    # missing encoder must not be mistaken for it
    for cls in (ModelLoadError, EncoderNotFoundError):
        assert not issubclass(cls, ValueError)
    assert issubclass(InvalidOptionError, ValueError)


def test_a_bad_option_is_an_invalid_option_error():
    from rasa_meta.runtime.config import parse_config

    with pytest.raises(InvalidOptionError, match="did you mean 'epochs'"):
        parse_config({"epoch": 1})
    with pytest.raises(InvalidOptionError, match="device 'tpu' is unknown"):
        parse_config({"device": "tpu"}, check_encoder=False)

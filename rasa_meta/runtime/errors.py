"""The errors rasa-meta raises, under one base class.

Catch :class:`RasaMetaError` for any of them. Errors about a bad setting are also
``ValueError`` (the value is wrong); errors about files and models are not, so code that
catches ``ValueError`` from another library (Rasa's missing-resource error is one) never
swallows them by accident.
"""

from __future__ import annotations


class RasaMetaError(Exception):
    """Base class of every error rasa-meta raises on purpose."""


class InvalidOptionError(RasaMetaError, ValueError):
    """A configuration option has a value it does not accept; the message names the key."""


class EncoderNotFoundError(RasaMetaError):
    """An encoder name or path cannot be resolved to a model."""


class ModelLoadError(RasaMetaError):
    """A saved model directory is missing a file or holds a corrupt one."""


class InScopeConfigError(InvalidOptionError):
    """``out_of_scope_detection`` asks for something this encoder cannot give."""

"""The muaudit error hierarchy.

Every error a user can cause derives from :class:`MuauditError`; the CLI prints its message as one line and
exits with the code attached to the class, never with a traceback.
"""
from __future__ import annotations


class MuauditError(Exception):
    """Base class of every user-facing muaudit error."""

    exit_code: int = 2


class DataError(MuauditError):
    """A data set cannot be found, read or validated."""


class TaskError(MuauditError):
    """A task specification is invalid (bad forget set, unknown dataset, malformed file)."""


class CheckpointError(MuauditError):
    """A checkpoint is missing, unsafe, corrupt, of the wrong architecture or holds non-finite weights."""


class ParameterError(MuauditError, ValueError):
    """A hyperparameter is unknown or violates its declared constraint."""


class ConfigurationError(MuauditError):
    """A run setting is unusable: an unknown or unavailable device, an unwritable cache directory, a limit."""


class TrainingError(MuauditError):
    """Training with the task's recipe produced NaN or infinite weights (the recipe is the likely cause)."""


class PluginError(MuauditError):
    """Base class of plugin errors: discovery, loading, contract violations and failures (exit 3)."""

    exit_code = 3


class UndeclaredDataError(PluginError):
    """A plugin reached for data it did not declare that it needs (a contract violation: exit 3)."""


class UnknownPluginError(PluginError):
    """No installed plugin has the requested name."""


class DuplicatePluginError(PluginError):
    """Two distributions provide a plugin of the same name; a qualified name is needed."""


class PluginLoadError(PluginError):
    """A plugin's entry point failed to import."""


class PluginValidationError(PluginError):
    """A plugin does not satisfy the method or attack contract."""


class PluginFailure(PluginError):
    """Plugin code raised (or called ``sys.exit``) in one of its hooks; the message names the plugin and hook."""

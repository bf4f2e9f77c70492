"""One exception hierarchy: each error carries a one-line message a user can act on
and the exit code the CLI gives it, so pipelines can tell failures apart."""

from __future__ import annotations


class WootzError(Exception):
    """Base of every error onnxwootz raises on purpose."""

    exit_code = 1


class BadModelError(WootzError):
    """The model file is missing, not ONNX, broken, or unsafe to load."""

    exit_code = 2


class UnsupportedOpError(BadModelError):
    """An op that a component (e.g. the torch converter) cannot execute."""


class BadDataError(WootzError):
    """A dataset that is empty, malformed or does not fit the model."""

    exit_code = 3


class BadSpecError(WootzError):
    """A configuration, spec or command-line value that cannot be used."""

    exit_code = 4


class DeviceError(WootzError):
    """A device or execution provider was asked for and is not available."""

    exit_code = 5


class GateError(WootzError):
    """A pipeline gate (accuracy, latency) was not met."""

    exit_code = 6


class InterruptedRunError(WootzError):
    """The run was interrupted; finished work is kept in the run directory."""

    exit_code = 130


class RunDirBusyError(BadSpecError):
    """Another process holds the run directory (a second `prune` on it): exit 4, like the other
    refusals of a --run-dir."""


class PruningError(WootzError):
    """A pruned model failed the check `apply` makes before writing it (it does not run, or
    does not compute what the masked original computes): a defect of onnxwootz, not of the input."""

    exit_code = 7


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

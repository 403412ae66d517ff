"""Errors a user can act on. The entry points print a :class:`MvfoulError` as one line and exit
non-zero, so its message must name the key or file, what was expected, and the fix."""

from __future__ import annotations


class MvfoulError(Exception):
    """Base class: a problem the user can fix; printed as one line by the entry points."""

    exit_code = 1


class ConfigError(MvfoulError):
    """The composed configuration is invalid. Lists every problem found, one per line."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = f"invalid configuration: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"invalid configuration ({len(self.problems)} problems):\n{lines}"
        super().__init__(message)


class DataError(MvfoulError):
    """A dataset folder, annotation file or video clip cannot be used as it is."""


class WeightsUnavailableError(MvfoulError):
    """Pretrained weights were asked for and cannot be loaded."""


class OutputError(MvfoulError):
    """A file or folder mvfoul writes (run folder, checkpoint, report, cache) cannot be written."""


class RunFolderError(MvfoulError):
    """The run folder is taken by another run, holds a finished run, or cannot be used."""

    exit_code = 2


class DivergenceError(MvfoulError):
    """Training produced a non-finite loss or non-finite weights; the run was stopped."""

    exit_code = 3

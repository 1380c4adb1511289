"""Errors a user can act on. The CLI prints their message on one line, without a traceback."""


class PipelineError(Exception):
    """A runtime problem with the user's data, files or environment (exit code 1)."""

    exit_code = 1


class ConfigError(PipelineError):
    """A bad config file, key, type or value, or a bad command-line argument (exit code 2)."""

    exit_code = 2


class UsageError(PipelineError):
    """The command was called wrongly: a missing input, a stage run out of order (exit code 2)."""

    exit_code = 2

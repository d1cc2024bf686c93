"""The errors a user can fix, which every command line reports in one `error:` line, exit code 2."""


class UserError(Exception):
    """Something the user can fix: a setting, input data or a directory; no traceback."""


class ConfigError(UserError, ValueError):
    """A bad config or bad input data."""


class CheckpointError(UserError):
    """A checkpoint directory that cannot be used as it is."""

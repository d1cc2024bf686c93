"""The errors a user can fix, which every command line reports in one `error:` line, exit code 2."""


class UserError(Exception):
    """Something the user can fix: a setting, input data or a directory; no traceback."""


class ConfigError(UserError, ValueError):
    """A bad config or bad input data."""


class CheckpointError(UserError):
    """A checkpoint directory that cannot be used as it is."""


class Interrupted(Exception):
    """A run or experiment stopped by SIGINT or SIGTERM after committing its checkpoint.

    Not a `UserError`: nothing is wrong, the work is only unfinished. Command lines exit with
    `exit_code` (128 + the signal, as a shell reports a process killed by it), so a shell loop
    over runs stops too; asked again, the run resumes from the checkpoint.
    """

    def __init__(self, signum: int, step: int | None = None) -> None:
        where = "" if step is None else f" at step {step}"
        super().__init__(f"stopped by signal {signum}{where}; run the same command to resume")
        self.signum = signum
        self.step = step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

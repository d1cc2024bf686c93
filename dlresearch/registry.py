"""Name -> builder registries, so that every ablation is one config override, and the one
convention for bad configs: a `ConfigError`, which a command line reports in one line, exit code 2."""

import sys
from collections.abc import Callable, Iterator
from typing import Generic, NoReturn, TypeVar

from absl import flags

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config or bad input data: reported in one line, exit code 2, no traceback."""


def fail(message: str) -> NoReturn:
    """One line on stderr and exit code 2: how every command line reports a bad config or input."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag (unknown field, wrong type) exits 2 without usage text."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        fail(str(error))
    except (KeyError, AttributeError, TypeError, ValueError) as error:  # raised by config overrides
        fail(f"bad config override: {error}")


class Registry(Generic[T]):
    """Maps names to builders; an unknown name is a `ConfigError` that lists the allowed names.

    `field` is the config field the name comes from (e.g. "model.activation"), used in errors.
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise KeyError(f"{self.field}: {name!r} registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(
                f"{self.field}={name!r} is not known; allowed values: {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

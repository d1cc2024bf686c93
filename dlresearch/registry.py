"""Name -> builder registries, so that every ablation is one config override; an unknown name is
a `ConfigError` listing the known ones."""

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from dlresearch.errors import ConfigError

T = TypeVar("T")


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

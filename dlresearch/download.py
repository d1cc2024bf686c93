"""Dataset files fetched on first use into a local cache.

`fetch` fills `<cache>/<dataset>/` with a dataset's published files. The cache is
`$DLRESEARCH_DATA_DIR`, by default `~/.cache/dlresearch`. Each file is tried at the base URLs of
`$DLRESEARCH_DATA_MIRROR` (comma-separated; the file at `<base>/<dataset>/<name>`), then at the
public mirrors, each once, with a short timeout so that an offline machine fails within seconds,
and a deadline per file so that a mirror trickling bytes fails too; a base URL that is not a URL
is a failure of that one (named in the final error), and the next is tried.
A download is written under a temporary name in the same directory, checked, then renamed: a file
with its final name is always complete and checked. An fcntl lock on the directory makes a second
process wait for the first one's download and then find the files.
"""

import contextlib
import dataclasses
import fcntl
import http.client
import logging
import os
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from dlresearch.errors import ConfigError

logger = logging.getLogger(__name__)

CACHE_ENV = "DLRESEARCH_DATA_DIR"
MIRROR_ENV = "DLRESEARCH_DATA_MIRROR"
# Seconds allowed to connect and between two reads: long enough for a slow server, short enough
# that an unreachable one fails fast.
TIMEOUT_S = 10.0
# Seconds allowed for one file from one base URL, all reads together (checked after each read, so
# a file fails at most TIMEOUT_S later): CIFAR-10's 170 MB at 300 kB/s; a mirror that trickles
# bytes slower fails, and the next is tried.
DEADLINE_S = 600.0
_CHUNK_BYTES = 1 << 20
_PARTIAL = ".part"  # the suffix of a file being written; never read as a dataset file

# check(path, name) raises `ConfigError` (naming the file `name`) unless the downloaded `path`
# holds the expected content of the cache file `name`.
Check = Callable[[Path, str], None]


@dataclasses.dataclass(frozen=True)
class Published:
    """A file as published under each base URL, and the cache files it gives: the file itself
    or, for a .tar.gz archive, its members with these base names."""

    name: str
    members: tuple[str, ...] = ()

    @property
    def gives(self) -> tuple[str, ...]:
        return self.members or (self.name,)


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset is published: its files and the public base URLs (tried after the user's)."""

    files: tuple[Published, ...]
    mirrors: tuple[str, ...]


def cache_dir() -> Path:
    """`$DLRESEARCH_DATA_DIR`, or `~/.cache/dlresearch`."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/dlresearch").expanduser()


def base_urls(dataset: str, source: Source) -> list[str]:
    """The base URLs of `dataset` in the order tried: the user's mirrors, then the public ones."""
    user = [b.strip().rstrip("/") for b in os.environ.get(MIRROR_ENV, "").split(",") if b.strip()]
    return [f"{base}/{dataset}/" for base in user] + list(source.mirrors)


def fetch(dataset: str, source: Source, check: Check) -> Path:
    """The cache directory of `dataset`, holding every file `source` gives; downloads missing ones.

    Raises `ConfigError` (naming the files, the directory and every URL tried with its failure)
    when a file can be had from none of the base URLs.
    """
    directory = cache_dir() / dataset
    if not _missing(directory, source):
        return directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the dataset cache {directory} ({CACHE_ENV}): {error}"
        ) from None
    with _locked(directory):
        # Holding the lock, no other process is writing here: partial files are from a killed one.
        for partial in directory.glob(f".*{_PARTIAL}"):
            partial.unlink()
        # Re-read: another process may have downloaded them while this one waited for the lock.
        for file in _missing(directory, source):
            _download(directory, file, dataset, source, check)
    return directory


def _missing(directory: Path, source: Source) -> list[Published]:
    return [f for f in source.files if not all((directory / n).is_file() for n in f.gives)]


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with (directory / ".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process downloading into %s", directory)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download(directory: Path, file: Published, dataset: str, source: Source, check: Check) -> None:
    failures = []
    for base in base_urls(dataset, source):
        url = base + file.name
        try:
            with _partial(directory, file.name) as part:
                _transfer(url, part)
                if file.members:
                    _extract(part, directory, file.members, check)
                else:
                    check(part, file.name)
                    part.replace(directory / file.name)
        except (OSError, http.client.HTTPException, tarfile.TarError, ConfigError) as error:
            failures.append(f"{url}: {_reason(error)}")
            continue
        if failures:
            logger.warning("downloaded %s after these failed: %s", url, "; ".join(failures))
        return
    needed = ", ".join(n for f in source.files for n in f.gives)
    raise ConfigError(
        f"cannot download {file.name} of data.name={dataset!r} "
        f"({'; '.join(failures) or f'no base URL: set {MIRROR_ENV}'}). "
        f"Put {needed} in {directory} (the cache, {CACHE_ENV}), list a mirror in {MIRROR_ENV}, "
        "or set data.dir to a directory holding them"
    )


@contextlib.contextmanager
def _partial(directory: Path, name: str) -> Iterator[Path]:
    """A fresh temporary path in `directory`, removed on exit unless renamed.

    Writers create the file themselves, so it gets the umask's permissions (mkstemp's are 0600).
    """
    path = directory / f".{name}.{uuid.uuid4().hex}{_PARTIAL}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _open(url: str) -> http.client.HTTPResponse:
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except ValueError:  # not a URL: a failure of this base URL, the next is tried
        raise urllib.error.URLError("not a URL") from None


def _transfer(url: str, path: Path) -> None:
    """Writes what `url` serves to `path`, with a progress bar on a terminal; `TimeoutError` once
    it took over `DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    with _open(url) as response, path.open("wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length else None
        size = f"{total / 1e6:.1f} MB" if total is not None else "size unknown"
        logger.info("downloading %s (%s)", url, size)
        received = 0
        with tqdm(
            total=total, desc=PurePosixPath(url).name, unit="B", unit_scale=True, disable=None
        ) as bar:
            # read1: what one read of the socket returns, so that a trickle cannot hold it.
            while chunk := response.read1(_CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"not complete after {DEADLINE_S:g} s ({received} bytes received)"
                    )
    # http.client returns a short body without complaint when the server closes early.
    if total is not None and received != total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def _extract(archive: Path, directory: Path, members: Sequence[str], check: Check) -> None:
    """Checks and moves into `directory` the archive's members with the base names `members`."""
    wanted = set(members)
    with tarfile.open(archive, "r:gz") as tar:
        # Only regular files, by base name: an archive's paths never choose where files go.
        for member in tar:
            name = PurePosixPath(member.name).name
            if name not in wanted or not member.isfile():
                continue
            with _partial(directory, name) as part:
                with tar.extractfile(member) as stream, part.open("wb") as out:
                    while chunk := stream.read(_CHUNK_BYTES):
                        out.write(chunk)
                check(part, name)
                part.replace(directory / name)
            wanted.remove(name)
    if wanted:
        raise ConfigError(f"the archive lacks {', '.join(sorted(wanted))}")


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__

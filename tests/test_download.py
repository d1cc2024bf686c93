"""Datasets downloaded on first use, against a local HTTP server on 127.0.0.1 (never the internet)."""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from conftest import small_config

from dlresearch import data, download, train
from dlresearch.errors import ConfigError, Interrupted

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
MNIST_GZ = [f"{name}.gz" for name in data.IDX_FILES]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror's root; records each request; may hold or cut responses short."""

    server: "_Server"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        self.server.gate.wait(timeout=120)
        cut = self.server.cut.get(self.path)
        if cut is None:
            super().do_GET()
            return
        body = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        if cut in ("short", "drip"):  # announces the whole file
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut == "drip":  # a byte every 0.1 s, for 3 s, then closes
            for byte in body[:30]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
            return
        self.wfile.write(body[: len(body) // 2])  # sends half, closes


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests: list[str]
    gate: threading.Event  # responses wait until it is set
    # path -> "short" (fewer bytes than Content-Length), "no_length" or "drip" (slowly, then short)
    cut: dict[str, str]


@dataclasses.dataclass
class Mirror:
    root: Path  # served as http://127.0.0.1:port/
    url: str
    server: _Server

    def put(self, path: str, content: bytes) -> None:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        (self.root / path).write_bytes(content)

    def files_requested(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for path in self.server.requests]


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    """A local mirror listed in DLRESEARCH_DATA_MIRROR, an empty cache, no public mirrors."""
    root = tmp_path / "www"
    root.mkdir()
    server = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.requests, server.gate, server.cut = [], threading.Event(), {}
    server.gate.set()
    serve = functools.partial(server.serve_forever, poll_interval=0.05)  # a quick shutdown
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(download.MIRROR_ENV, url)
    for name, source in data.DOWNLOADS.items():
        monkeypatch.setitem(data.DOWNLOADS, name, dataclasses.replace(source, mirrors=()))
    yield Mirror(root, url, server)
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes((0, 0, 8, array.ndim)) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def publish_idx(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch, prefix: str = "mnist"
) -> dict[str, np.ndarray]:
    """Small IDX files, gzipped, under `prefix/` on the mirror; their content sums registered."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 4, 3), np.uint8),
        "train-labels-idx1-ubyte": np.arange(12, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 4, 3), np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(5, dtype=np.uint8),
    }
    for name, array in arrays.items():
        mirror.put(f"{prefix}/{name}.gz", gzip.compress(idx_bytes(array), mtime=7))
    sums = {name: sha256(idx_bytes(array)) for name, array in arrays.items()}
    monkeypatch.setitem(data.CHECKSUMS, "mnist", sums)
    return arrays


def data_config(name: str = "mnist") -> ml_collections.ConfigDict:
    """A `data` section with no data.dir: the cache."""
    return ml_collections.ConfigDict(
        {"name": name, "dir": "", "tfds_name": "", "holdout": 0.0, "augment": "auto"}
    )


def cache() -> Path:
    return Path(os.environ[download.CACHE_ENV])


# -- download, verify, reuse ----------------------------------------------------------------------
def test_download_then_reuse_the_cache_with_the_mirror_gone(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = publish_idx(mirror, monkeypatch)
    ds = data.load(data_config())
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert sorted(mirror.files_requested()) == sorted(MNIST_GZ)
    assert sorted(p.name for p in (cache() / "mnist").iterdir()) == sorted([".lock", *MNIST_GZ])

    monkeypatch.setenv(download.MIRROR_ENV, closed_port_url())
    again = data.load(data_config())
    np.testing.assert_array_equal(again.train_images, ds.train_images)
    assert len(mirror.server.requests) == 4  # nothing fetched the second time


def test_real_mnist_from_a_mirror_with_new_gzip_wrappers(mirror: Mirror) -> None:
    # ../shared's train-images .gz is not the published file (only its content is): accepted.
    for name in MNIST_GZ:
        mirror.put(f"mnist/{name}", (SHARED_MNIST / name).read_bytes())
    directory = data.dataset_dir("mnist")
    assert directory == cache() / "mnist"
    ds = data.load(data_config())
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (
        10000,
        28,
        28,
        1,
    )
    assert np.bincount(ds.test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_cifar10_archive_is_extracted_and_checked(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    records = {name: rng.integers(0, 10, (2, 3073), np.uint8) for name in data.CIFAR10_FILES}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in [*records.items(), ("batches.meta.txt", np.zeros(3, np.uint8))]:
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = content.nbytes
            tar.addfile(info, io.BytesIO(content.tobytes()))
    mirror.put("cifar10/cifar-10-binary.tar.gz", buffer.getvalue())
    sums = {name: sha256(content.tobytes()) for name, content in records.items()}
    monkeypatch.setitem(data.CHECKSUMS, "cifar10", sums)

    ds = data.load(data_config("cifar10"))
    assert ds.train_images.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(ds.test_labels, records["test_batch.bin"][:, 0])
    kept = sorted(p.name for p in (cache() / "cifar10").iterdir())
    assert kept == sorted([".lock", *data.CIFAR10_FILES])  # no archive, no other member


# -- failures -------------------------------------------------------------------------------------
def test_corrupted_file_is_refused_and_not_kept(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = publish_idx(mirror, monkeypatch)
    labels = arrays["train-labels-idx1-ubyte"].copy()
    labels[3] = (labels[3] + 1) % 10  # a valid IDX file with other content
    mirror.put("mnist/train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(labels)))
    with pytest.raises(ConfigError) as error:
        data.load(data_config())
    message = str(error.value)
    assert f"{mirror.url}/mnist/train-labels-idx1-ubyte.gz: checksum mismatch" in message
    assert data.CHECKSUMS["mnist"]["train-labels-idx1-ubyte"] in message
    assert sha256(idx_bytes(labels)) in message
    assert not list((cache() / "mnist").glob("*train-labels*"))


@pytest.mark.parametrize("cut", ["short", "no_length"])
def test_interrupted_transfer_leaves_no_file_and_a_retry_succeeds(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    publish_idx(mirror, monkeypatch)
    mirror.server.cut["/mnist/t10k-images-idx3-ubyte.gz"] = cut
    # Announced length: the short body is named; unknown length: the truncated gzip stream is.
    reason = "connection closed after" if cut == "short" else "not a valid gzip file"
    with pytest.raises(ConfigError, match=reason):
        data.dataset_dir("mnist")
    assert not list((cache() / "mnist").glob("*t10k-images*"))

    del mirror.server.cut["/mnist/t10k-images-idx3-ubyte.gz"]
    data.load(data_config())
    # The first run stopped at the cut file; the retry fetches only what is missing.
    assert mirror.files_requested() == [*MNIST_GZ[:3], *MNIST_GZ[2:]]


def test_a_mirror_trickling_bytes_fails_at_the_deadline_leaving_no_file(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_idx(mirror, monkeypatch)
    mirror.server.cut["/mnist/train-images-idx3-ubyte.gz"] = "drip"
    monkeypatch.setattr(download, "DEADLINE_S", 0.5)
    with pytest.raises(ConfigError, match=r"train-images-idx3-ubyte.gz: not complete after 0.5 s"):
        data.dataset_dir("mnist")
    assert [p.name for p in (cache() / "mnist").iterdir()] == [".lock"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_download_stops_the_run_at_once_writing_nothing(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sig: int
) -> None:
    publish_idx(mirror, monkeypatch)
    mirror.server.cut["/mnist/train-images-idx3-ubyte.gz"] = "drip"

    def signal_once_requested() -> None:
        while not mirror.server.requests:
            time.sleep(0.01)
        time.sleep(0.3)  # inside the trickle
        os.kill(os.getpid(), sig)

    threading.Thread(target=signal_once_requested, daemon=True).start()
    config = small_config(**{"data.name": "mnist", "train.batch_size": 8})
    with pytest.raises(Interrupted) as stop:
        train.run(config, str(tmp_path / "run"))
    assert stop.value.signum == sig and stop.value.step is None
    assert [p.name for p in (cache() / "mnist").iterdir()] == [".lock"]
    assert not (tmp_path / "run").exists()


def test_partial_files_of_a_killed_download_are_removed(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_idx(mirror, monkeypatch)
    stale = cache() / "mnist" / ".train-images-idx3-ubyte.gz.0123.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    data.dataset_dir("mnist")
    assert not stale.exists()


def test_offline_with_an_empty_cache_names_the_files_the_cache_and_data_dir(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One command-line run as a user would see it: one line on stderr, exit code 2.
    offline = closed_port_url()
    script = (
        "import dataclasses, sys\n"
        "from absl import app\n"
        "from dlresearch import cli, data, main\n"
        "data.DOWNLOADS['mnist'] = dataclasses.replace(data.DOWNLOADS['mnist'], mirrors=())\n"
        "app.run(main.main, flags_parser=cli.parse_flags)\n"
    )
    workdir = cache().parent / "run"
    result = subprocess.run(
        [sys.executable, "-c", script, "--config=configs/mnist_mlp.py", f"--workdir={workdir}"],
        cwd=ROOT,
        env={**os.environ, download.MIRROR_ENV: offline},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(name in lines[0] for name in MNIST_GZ)
    assert str(cache() / "mnist") in lines[0] and "data.dir" in lines[0]
    assert f"{offline}/mnist/train-images-idx3-ubyte.gz" in lines[0]
    assert mirror.server.requests == []


def test_not_downloadable(mirror: Mirror) -> None:
    with pytest.raises(ConfigError, match=r"data.name='digits' cannot be downloaded; .*cifar10"):
        data.dataset_dir("digits")


# -- where from -----------------------------------------------------------------------------------
def test_mirror_list_is_tried_in_order_before_the_public_mirrors(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_idx(mirror, monkeypatch, prefix="public/mnist")
    public = f"{mirror.url}/public/mnist/"
    monkeypatch.setitem(
        data.DOWNLOADS, "mnist", dataclasses.replace(data.DOWNLOADS["mnist"], mirrors=(public,))
    )
    # Spaces, trailing slashes and empty entries are tolerated.
    monkeypatch.setenv(download.MIRROR_ENV, f" {mirror.url}/first/ ,,{mirror.url}/second")
    assert download.base_urls("mnist", data.DOWNLOADS["mnist"]) == [
        f"{mirror.url}/first/mnist/",
        f"{mirror.url}/second/mnist/",
        public,
    ]
    data.dataset_dir("mnist")
    first = MNIST_GZ[0]
    assert mirror.server.requests[:3] == [
        f"/first/mnist/{first}",
        f"/second/mnist/{first}",
        f"/public/mnist/{first}",
    ]

    # A user's mirror that has the files is used; the public mirror is not asked.
    publish_idx(mirror, monkeypatch, prefix="second/mnist")
    monkeypatch.setenv(download.CACHE_ENV, str(cache().parent / "cache2"))
    mirror.server.requests.clear()
    data.dataset_dir("mnist")
    assert mirror.server.requests == [
        path for name in MNIST_GZ for path in (f"/first/mnist/{name}", f"/second/mnist/{name}")
    ]


def test_a_mirror_that_is_not_a_url_is_skipped_and_named(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_idx(mirror, monkeypatch)
    monkeypatch.setenv(download.MIRROR_ENV, f"not a url,{mirror.url}")
    data.dataset_dir("mnist")
    assert sorted(mirror.files_requested()) == sorted(MNIST_GZ)

    monkeypatch.setenv(download.CACHE_ENV, str(cache().parent / "cache2"))
    monkeypatch.setenv(download.MIRROR_ENV, "not a url")
    with pytest.raises(
        ConfigError, match=r"\(not a url/mnist/train-images-idx3-ubyte.gz: not a URL\)"
    ):
        data.dataset_dir("mnist")


def test_cache_dir_defaults_to_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(download.CACHE_ENV, raising=False)
    assert download.cache_dir() == Path.home() / ".cache" / "dlresearch"
    monkeypatch.setenv(download.CACHE_ENV, "~/data")
    assert download.cache_dir() == Path.home() / "data"


# -- two processes at once ------------------------------------------------------------------------
def test_two_processes_download_once(mirror: Mirror) -> None:
    for name in MNIST_GZ:
        mirror.put(f"mnist/{name}", (SHARED_MNIST / name).read_bytes())
    # The first request waits until the second process reports waiting for the lock.
    mirror.server.gate.clear()
    script = (
        "import dataclasses\n"
        "import logging\n"
        "from dlresearch import data\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "data.DOWNLOADS['mnist'] = dataclasses.replace(data.DOWNLOADS['mnist'], mirrors=())\n"
        "print(data.dataset_dir('mnist'))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    waiting = threading.Event()
    logs: list[list[str]] = [[], []]

    def read(proc: subprocess.Popen, log: list[str]) -> None:
        for line in proc.stderr:
            log.append(line)
            if "waiting for another process" in line:
                waiting.set()

    readers = [threading.Thread(target=read, args=pair) for pair in zip(procs, logs, strict=True)]
    for reader in readers:
        reader.start()
    saw_waiting = waiting.wait(timeout=120)
    mirror.server.gate.set()
    for proc, reader in zip(procs, readers, strict=True):
        proc.wait(timeout=300)
        reader.join()
    outputs = [proc.stdout.read() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], logs
    assert saw_waiting, logs
    assert outputs == [f"{cache() / 'mnist'}\n"] * 2
    assert sorted(mirror.files_requested()) == sorted(MNIST_GZ)  # each file once
    ds = data.load(data_config())
    assert ds.train_images.shape == (60000, 28, 28, 1)

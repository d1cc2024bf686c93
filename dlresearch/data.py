"""Datasets as whole in-memory uint8 arrays, plus the on-device pieces of the input pipeline.

`load(config.data)` reads a registered dataset from local files (`data.dir`, or else the download
cache that `dataset_dir` fills, see `dlresearch.download`), checks it against the published
checksums, applies the optional hold-out split (`data.holdout`, a fraction of the training set)
and computes the per-channel statistics.
`facts(config.data)` tells a dataset's sizes, classes, image shape and chance level without
loading it (epochs to steps, targets relative to chance).
`normalize`, `augment_crop_flip` and `epoch_permutation` are pure JAX, so the training step can
build every batch on the device.
"""

import dataclasses
import functools
import gzip
import hashlib
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dlresearch import download
from dlresearch.errors import ConfigError, UserError
from dlresearch.parallel import first_failure
from dlresearch.registry import Registry


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on numpy fields is ambiguous
class Dataset:
    """A dataset ready for training: uint8 images [N, H, W, C], int32 labels [N], statistics."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray  # the evaluation split: "test", or the held-out "validation" split
    test_labels: np.ndarray
    num_classes: int
    mean: np.ndarray  # float32 [C], per-channel mean of train_images / 255
    std: np.ndarray  # float32 [C], per-channel divisor of train_images / 255 - mean (data.scale)
    augment: bool  # pad-4 random crop + horizontal flip during training
    eval_split: str  # "test" or "validation"


@dataclasses.dataclass(frozen=True)
class Facts:
    """What a script needs to know of a dataset without loading it: its splits as stored (before
    any `data.holdout`), classes and image shape."""

    train_size: int
    test_size: int
    num_classes: int
    input_shape: tuple[int, int, int]  # height, width, channels

    @property
    def chance(self) -> float:
        """The accuracy of guessing a class uniformly at random."""
        return 1 / self.num_classes

    def steps(self, epochs: float, batch_size: int) -> int:
        """The training steps that make at least `epochs` passes over the training set at
        `batch_size` (at least 1)."""
        return max(1, math.ceil(epochs * self.train_size / batch_size))

    @classmethod
    def of(cls, dataset: "Dataset") -> "Facts":
        """The facts of a dataset loaded without a hold-out split."""
        return cls(
            train_size=len(dataset.train_labels),
            test_size=len(dataset.test_labels),
            num_classes=dataset.num_classes,
            input_shape=tuple(dataset.train_images.shape[1:]),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """What a dataset builder returns: its train and test splits as stored, and its defaults."""

    train_images: np.ndarray  # uint8 [N, H, W, C]
    train_labels: np.ndarray  # integer [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    augment: bool = False  # the dataset's default for data.augment="auto"


DATASETS: Registry[Callable[[ml_collections.ConfigDict], Splits]] = Registry("data.name")

# data.augment -> whether to augment; None means the dataset's default.
_AUGMENT: Registry[bool | None] = Registry("data.augment")
_AUGMENT.add("auto", None)
_AUGMENT.add("none", False)
_AUGMENT.add("crop_flip", True)

# data.scale -> the per-channel divisor applied after subtracting the train mean, from the std of
# images / 255: "standardize" gives unit variance; "center" keeps the centred raw 0-255 pixel
# values, Krizhevsky et al. 2012's only preprocessing (their large inputs saturate tanh units).
_SCALE: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("data.scale")
_SCALE.add("standardize", lambda std: std)
_SCALE.add("center", lambda std: np.full_like(std, 1 / 255))

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FILES = (*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin")

# Published checksums: dataset -> file name -> sha256. The key says which bytes are hashed: a plain
# name is the decompressed content (so any gzip wrapper is accepted), a ".gz" name is that exact
# gzip file as published. Tests replace this table with the checksums of their fixtures.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": dict(
        zip(
            IDX_FILES,
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
            strict=True,
        )
    ),
    # Fashion-MNIST publishes checksums of its .gz downloads only (md5 in the project README; these
    # sha256 of the same files are from TFDS's url_checksums/fashion_mnist.txt), not of the content.
    # So only the original .gz files are verified; plain (decompressed) copies load unverified.
    "fashion_mnist": dict(
        zip(
            (f"{name}.gz" for name in IDX_FILES),
            (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
            strict=True,
        )
    ),
    "cifar10": dict(
        zip(
            CIFAR10_FILES,
            (
                "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
                "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
                "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
                "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
                "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
                "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
            ),
            strict=True,
        )
    ),
}
# What `dataset_dir` downloads: the published files and their public mirrors. Tests replace the
# mirrors with a local server.
_IDX_DOWNLOADS = tuple(download.Published(f"{name}.gz") for name in IDX_FILES)
DOWNLOADS: dict[str, download.Source] = {
    "mnist": download.Source(
        _IDX_DOWNLOADS,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion_mnist": download.Source(
        _IDX_DOWNLOADS, mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    ),
    "cifar10": download.Source(
        (download.Published("cifar-10-binary.tar.gz", members=CIFAR10_FILES),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
}
_CIFAR_RECORD = 1 + 32 * 32 * 3  # label byte, then the R, G and B planes, each row-major
_PAD = 4  # augmentation padding, as in the ResNet paper's CIFAR-10 experiments


def eval_split(config: ml_collections.ConfigDict) -> str:
    """The split a `data` config evaluates on: "validation" (`holdout` > 0) or "test"."""
    return "validation" if config.get("holdout", 0) else "test"


def holdout_size(fraction: float, train_size: int, name: str) -> int:
    """The training examples that `data.holdout=fraction` holds out of the `train_size` of dataset
    `name`: the nearest whole number (1/6 of MNIST's 60,000 is 10,000). A `ConfigError` unless
    0 <= fraction < 1 and a positive fraction leaves at least one example on either side."""
    count = round(fraction * train_size) if 0 <= fraction < 1 else -1
    if count < 0 or (fraction > 0 and not 0 < count < train_size):
        raise ConfigError(
            f"data.holdout={fraction!r} must be a fraction in [0, 1) holding out at least one "
            f"training example and keeping one; data.name={name!r} has {train_size}"
        )
    return count


def facts(config: ml_collections.ConfigDict) -> Facts:
    """The `Facts` of the dataset a `data` config names: from `FACTS` for the datasets of fixed
    size, else (`tfds`) from the dataset, loaded without its hold-out."""
    DATASETS.get(config.name)  # an unknown name fails here, listing the known ones
    if config.name in FACTS:
        return FACTS[config.name]
    whole = ml_collections.ConfigDict(config.to_dict())
    whole.holdout = 0.0
    return Facts.of(load(whole))


def load(config: ml_collections.ConfigDict) -> Dataset:
    """Builds the dataset named by the `data` config section (see `DATASETS` for the names)."""
    builder = DATASETS.get(config.name)
    augment = _AUGMENT.get(config.get("augment", "auto"))  # checked before the slow part
    scale = _SCALE.get(config.get("scale", "standardize"))
    splits = builder(config)
    train_images, train_labels = splits.train_images, splits.train_labels
    test_images, test_labels = splits.test_images, splits.test_labels
    holdout = holdout_size(config.get("holdout", 0), len(train_labels), config.name)
    if holdout:
        test_images, test_labels = train_images[-holdout:], train_labels[-holdout:]
        train_images, train_labels = train_images[:-holdout], train_labels[:-holdout]
    _check_labels(config.name, np.concatenate([train_labels, test_labels]), splits.num_classes)
    mean, std = _channel_stats(train_images)
    std = scale(std)
    train_labels, test_labels = train_labels.astype(np.int32), test_labels.astype(np.int32)
    arrays = [train_images, train_labels, test_images, test_labels]
    for array in arrays:
        # Splits share memory with the builder's arrays: read-only keeps the frozen Dataset frozen.
        array.flags.writeable = False
    return Dataset(
        config.name,
        *arrays,
        num_classes=splits.num_classes,
        mean=mean,
        std=std,
        augment=splits.augment if augment is None else augment,
        eval_split=eval_split(config),
    )


def load_on_every_process(config: ml_collections.ConfigDict) -> Dataset:
    """The dataset of a run's `config`; a process that cannot load it (e.g. its files are missing
    on that host) stops every process with its error, before a collective leaves others waiting."""
    try:
        dataset = load(config.data)
        if config.train.batch_size > len(dataset.train_labels):
            raise ConfigError(
                f"train.batch_size={config.train.batch_size} exceeds the "
                f"{len(dataset.train_labels)} training examples of data.name={config.data.name!r}"
            )
        failure = ""
    except UserError as error:
        failure = str(error)
    failure = first_failure(failure)
    if failure:
        raise ConfigError(failure)
    return dataset


def normalize(
    images: jax.Array, mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike
) -> jax.Array:
    """uint8 images -> float32 `(images / 255 - mean) / std`, per channel (the last axis)."""
    scaled = images.astype(jnp.float32) / 255.0
    return (scaled - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def augment_crop_flip(images: jax.Array, key: jax.Array) -> jax.Array:
    """Pads each image of `images` [B, H, W, C] by 4 zeros, crops a random H x W window, flips it
    horizontally with probability 1/2.

    `key` is either one key, split into B per-example keys, or already a batch of B per-example
    keys (so a caller can make an example's augmentation independent of how the batch is sharded).
    Applied after `normalize`, the zero padding is the per-channel train mean.
    """
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    keys = jax.random.split(key, images.shape[0]) if key.ndim == (0 if typed else 1) else key
    return jax.vmap(_crop_flip)(images, keys)


def _crop_flip(image: jax.Array, key: jax.Array) -> jax.Array:
    crop_key, flip_key = jax.random.split(key)
    padded = jnp.pad(image, ((_PAD, _PAD), (_PAD, _PAD), (0, 0)))
    top, left = jax.random.randint(crop_key, (2,), 0, 2 * _PAD + 1)
    crop = jax.lax.dynamic_slice(padded, (top, left, 0), image.shape)
    return jnp.where(jax.random.bernoulli(flip_key), crop[:, ::-1], crop)


def epoch_permutation(data_key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The example order of `epoch`: a function of (data_key, epoch) only, so restarts repeat it."""
    return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


# -- statistics and checks ---------------------------------------------------------------------
def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of images / 255, exact, from uint8 value histograms."""
    channels = images.shape[-1]
    counts = np.zeros((channels, 256), np.int64)
    # Chunks bound the memory: bincount widens its input to int64 (8x the uint8 size).
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096].reshape(-1, channels)
        for c in range(channels):
            counts[c] += np.bincount(chunk[:, c], minlength=256)
    values = np.arange(256) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ values / total
    var = counts @ values**2 / total - mean**2
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 1e-12)).astype(np.float32)


def _check_labels(name: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and not (labels.min() >= 0 and labels.max() < num_classes):
        raise ConfigError(
            f"data.name={name!r}: labels range over [{labels.min()}, {labels.max()}], "
            f"expected [0, {num_classes})"
        )


# -- files -------------------------------------------------------------------------------------
def dataset_dir(name: str) -> Path:
    """The cache directory holding dataset `name`'s files, downloaded into it first if absent.

    Raises `ConfigError` when `name` is not downloadable or the files can be had from nowhere.
    """
    if name not in DOWNLOADS:
        raise ConfigError(
            f"data.name={name!r} cannot be downloaded; downloadable: {', '.join(DOWNLOADS)}"
        )
    return download.fetch(name, DOWNLOADS[name], functools.partial(_check_download, name))


def _check_download(dataset: str, path: Path, name: str) -> None:
    _content(path.read_bytes(), dataset, name, where=name)


def _directory(config: ml_collections.ConfigDict, files: tuple[str, ...]) -> Path:
    """data.dir, or the download cache when it is empty."""
    directory = config.get("dir", "")
    if not directory:
        return dataset_dir(config.name)
    what = f"the {config.name} files ({', '.join(files)}; each plain or .gz)"
    if not Path(directory).is_dir():
        raise ConfigError(f"data.dir={directory!r} is not a directory; it must hold {what}")
    return Path(directory)


def _read(directory: Path, dataset: str, name: str) -> tuple[Path, bytes]:
    """The path and (decompressed) content of `name` or `name.gz`, checked against `CHECKSUMS`."""
    plain, packed = directory / name, directory / f"{name}.gz"
    path = plain if plain.is_file() else packed
    if not path.is_file():
        raise ConfigError(f"missing {plain}: {dataset} expects {name} or {name}.gz in data.dir")
    return path, _content(path.read_bytes(), dataset, path.name, where=str(path))


def _content(stored: bytes, dataset: str, stored_name: str, where: str) -> bytes:
    """The content of `stored`, a copy of one of `dataset`'s files named `stored_name` (gzipped if
    it ends in .gz), checked against `CHECKSUMS`; `where` names the copy in errors."""
    expected = CHECKSUMS.get(dataset, {})
    gzipped = stored_name.endswith(".gz")
    content = stored
    if gzipped:
        if stored_name in expected:
            _verify(where, stored, expected[stored_name], "the published .gz file")
        try:
            content = gzip.decompress(stored)
        except (OSError, EOFError, zlib.error) as error:
            raise ConfigError(f"{where} is not a valid gzip file: {error}") from None
    name = stored_name.removesuffix(".gz")
    if name in expected:
        what = "decompressed content" if gzipped else "content"
        _verify(where, content, expected[name], what)
    return content


def _verify(where: str, content: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise ConfigError(
            f"checksum mismatch for {where} ({what}): expected sha256 {expected}, got {actual}"
        )


def _parse_idx(path: Path, content: bytes, ndim: int) -> np.ndarray:
    """An IDX array of unsigned bytes: magic 0x0000 0x08 ndim, ndim big-endian uint32 dims, data."""
    header = 4 + 4 * ndim
    if len(content) < header or content[:4] != bytes((0, 0, 0x08, ndim)):
        raise ConfigError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s): "
            f"magic {content[:4].hex()}, expected {bytes((0, 0, 0x08, ndim)).hex()}"
        )
    dims = struct.unpack(f">{ndim}I", content[4:header])
    if len(content) - header != math.prod(dims):
        raise ConfigError(
            f"{path}: IDX header gives shape {dims} ({math.prod(dims)} bytes) "
            f"but the file holds {len(content) - header} data bytes"
        )
    return np.frombuffer(content, np.uint8, offset=header).reshape(dims)


def _idx_split(directory: Path, dataset: str, images: str, labels: str) -> tuple[np.ndarray, ...]:
    images_path, images_content = _read(directory, dataset, images)
    labels_path, labels_content = _read(directory, dataset, labels)
    image_array = _parse_idx(images_path, images_content, 3)
    label_array = _parse_idx(labels_path, labels_content, 1)
    if len(image_array) != len(label_array):
        raise ConfigError(
            f"{images_path} holds {len(image_array)} images but {labels_path} holds "
            f"{len(label_array)} labels"
        )
    return image_array[..., None], label_array


def _cifar_batch(directory: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    path, content = _read(directory, "cifar10", name)
    if len(content) % _CIFAR_RECORD:
        raise ConfigError(
            f"{path} holds {len(content)} bytes, not a whole number of {_CIFAR_RECORD}-byte records"
        )
    records = np.frombuffer(content, np.uint8).reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0]


# -- the registered datasets -------------------------------------------------------------------
@DATASETS.register("digits")
def _digits(config: ml_collections.ConfigDict) -> Splits:
    """scikit-learn's 1797 8x8 handwritten digits (values 0..16): no files needed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    # A fixed split, independent of the run seed, so every run evaluates on the same 360 digits.
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1437], order[1437:]
    return Splits(images[train], digits.target[train], images[test], digits.target[test], 10)


def _idx_dataset(dataset: str, config: ml_collections.ConfigDict) -> Splits:
    """MNIST-format IDX files in data.dir (or the download cache)."""
    directory = _directory(config, IDX_FILES)
    train_images, train_labels = _idx_split(directory, dataset, *IDX_FILES[:2])
    test_images, test_labels = _idx_split(directory, dataset, *IDX_FILES[2:])
    return Splits(train_images, train_labels, test_images, test_labels, 10)


DATASETS.add("mnist", functools.partial(_idx_dataset, "mnist"))
DATASETS.add("fashion_mnist", functools.partial(_idx_dataset, "fashion_mnist"))


@DATASETS.register("cifar10")
def _cifar10(config: ml_collections.ConfigDict) -> Splits:
    """The CIFAR-10 "binary version" batches in data.dir (or the download cache)."""
    directory = _directory(config, CIFAR10_FILES)
    train = [_cifar_batch(directory, name) for name in CIFAR10_FILES[:-1]]
    test_images, test_labels = _cifar_batch(directory, CIFAR10_FILES[-1])
    # Stored channel-planar (CHW); the models take HWC.
    return Splits(
        train_images=np.concatenate([images for images, _ in train]).transpose(0, 2, 3, 1).copy(),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images.transpose(0, 2, 3, 1).copy(),
        test_labels=test_labels,
        num_classes=10,
        augment=True,
    )


# The facts of every registered dataset of fixed size (`facts` derives those of `tfds` datasets);
# tests/test_data.py checks each against the loaded data.
FACTS = {
    "digits": Facts(train_size=1_437, test_size=360, num_classes=10, input_shape=(8, 8, 1)),
    "mnist": Facts(train_size=60_000, test_size=10_000, num_classes=10, input_shape=(28, 28, 1)),
    "fashion_mnist": Facts(
        train_size=60_000, test_size=10_000, num_classes=10, input_shape=(28, 28, 1)
    ),
    "cifar10": Facts(train_size=50_000, test_size=10_000, num_classes=10, input_shape=(32, 32, 3)),
}
# How reports and rule texts name a dataset; a name not here is shown as it is.
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def title(name: str) -> str:
    """The name of dataset `name` (a `data.name`) in prose, e.g. "Fashion-MNIST"."""
    return TITLES.get(name, name)


@DATASETS.register("tfds")
def _tfds(config: ml_collections.ConfigDict) -> Splits:
    """A TFDS dataset (ArrayRecord) named by data.tfds_name: prepared already, or downloaded and
    prepared by TFDS when data.tfds_download is set."""
    # Imported here: only this dataset needs TFDS, and its import is slow.
    import tensorflow_datasets as tfds

    name, data_dir = config.get("tfds_name", ""), config.get("dir", "") or None
    if not name:
        raise ConfigError("data.tfds_name must name a prepared TFDS dataset when data.name='tfds'")
    # Off by default: a run then needs no network and writes nothing outside its workdir.
    allow_download = bool(config.get("tfds_download", False))
    where = f"data.tfds_name={name!r} (data.dir={data_dir or 'the TFDS default'})"
    try:
        train, test = tfds.data_source(
            name, split=["train", "test"], data_dir=data_dir, download=allow_download
        )
    except Exception as error:  # TFDS raises KeyError, AssertionError, ValueError, ... for these
        # The first line only (DatasetNotFoundError lists every known dataset after it).
        text = str(error).strip().strip("'\"")
        reason = text.splitlines()[0].rstrip(".") if text else type(error).__name__
        remedy = (
            "TFDS could not download and prepare it (most stock builders need tensorflow "
            "installed, and all need the internet)"
            if allow_download
            else "prepare the dataset first (array_record format) and point data.dir at its "
            "data_dir, or set data.tfds_download=True to let TFDS download and prepare it"
        )
        raise ConfigError(f"TFDS cannot read {where}: {reason}. {remedy}") from None
    features = train.dataset_info.features
    if "image" not in features or "label" not in features:
        raise ConfigError(f"{where} needs 'image' and 'label' features, has {list(features)}")
    train_images, train_labels = _tfds_arrays(where, train)
    test_images, test_labels = _tfds_arrays(where, test)
    return Splits(
        train_images, train_labels, test_images, test_labels, features["label"].num_classes
    )


def _tfds_arrays(where: str, source: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    # Record by record: the data source of `tfds.testing.mock_data` does not support batched reads.
    records = [source[i] for i in range(len(source))]
    if not records:
        raise ConfigError(f"{where}: a split is empty")
    try:
        images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    except ValueError:
        raise ConfigError(f"{where}: images differ in shape; only fixed-size images fit") from None
    if images.ndim == 3:
        images = images[..., None]
    return images, np.asarray([r["label"] for r in records])

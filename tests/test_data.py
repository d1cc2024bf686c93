"""dlresearch.data on tiny fixture files in tmp_path; one test reads the real MNIST copy."""

import gzip
import hashlib
import os
import re
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dlresearch import data
from dlresearch.errors import ConfigError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_config(**fields: object) -> ml_collections.ConfigDict:
    """A `data` config section with the defaults of the run config."""
    config = {"name": "digits", "dir": "", "tfds_name": "", "holdout": 0.0, "augment": "auto"}
    config["scale"] = "standardize"
    return ml_collections.ConfigDict({**config, **fields})


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes((0, 0, 0x08, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: Path, content: bytes, gz: bool) -> Path:
    """Writes `content` to `path` (or gzipped to `path.gz`); returns the written path."""
    if gz:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content, mtime=0)
    path.write_bytes(content)
    return path


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def write_idx_dataset(
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    gz: bool = False,
    num_train: int = 10,
    num_test: int = 4,
    dataset: str = "mnist",
) -> dict[str, np.ndarray]:
    """Writes the four IDX files of 5x4 images and registers the checksums of their content."""
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 5, 4), np.uint8),
        "train-labels-idx1-ubyte": np.arange(num_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 5, 4), np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(num_test, dtype=np.uint8)[::-1] % 10,
    }
    checksums = {}
    for name, array in arrays.items():
        write(directory / name, idx_bytes(array), gz)
        checksums[name] = sha256(idx_bytes(array))
    monkeypatch.setitem(data.CHECKSUMS, dataset, checksums)
    return arrays


def write_cifar_dataset(directory: Path, monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Three records per batch file in the binary layout; batch 1 gzipped, the rest plain."""
    rng = np.random.default_rng(2)
    checksums, batches = {}, []
    for i, name in enumerate(data.CIFAR10_FILES):
        images = rng.integers(0, 256, (3, 32, 32, 3), np.uint8)
        labels = np.array([i, 9 - i, 3], np.uint8)
        planar = images.transpose(0, 3, 1, 2).reshape(3, -1)  # R plane, G plane, B plane
        content = np.concatenate([labels[:, None], planar], axis=1).tobytes()
        write(directory / name, content, gz=i == 0)
        checksums[name] = sha256(content)
        batches.append((images, labels))
    monkeypatch.setitem(data.CHECKSUMS, "cifar10", checksums)
    return batches


# -- IDX: MNIST and Fashion-MNIST -----------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    arrays = write_idx_dataset(tmp_path, monkeypatch, gz=gz)
    ds = data.load(make_config(name="mnist", dir=str(tmp_path)))
    assert ds.train_images.dtype == np.uint8 and ds.train_images.shape == (10, 5, 4, 1)
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.test_images[..., 0], arrays["t10k-images-idx3-ubyte"])
    assert ds.train_labels.dtype == np.int32 and ds.test_labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train_labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert (ds.name, ds.num_classes, ds.augment, ds.eval_split) == ("mnist", 10, False, "test")
    scaled = arrays["train-images-idx3-ubyte"] / 255.0
    assert ds.mean.dtype == np.float32 and ds.mean.shape == (1,)
    np.testing.assert_allclose(ds.mean, [scaled.mean()], rtol=1e-6)
    np.testing.assert_allclose(ds.std, [scaled.std()], rtol=1e-5)
    assert not ds.train_images.flags.writeable


def test_checksum_mismatch_names_the_file_and_both_sums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = write_idx_dataset(tmp_path, monkeypatch, gz=True)
    corrupted = arrays["t10k-images-idx3-ubyte"].copy()
    corrupted[0, 0, 0] ^= 1  # still a valid IDX file, different content
    path = write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(corrupted), gz=True)
    expected = data.CHECKSUMS["mnist"]["t10k-images-idx3-ubyte"]
    with pytest.raises(ConfigError) as error:
        data.load(make_config(name="mnist", dir=str(tmp_path)))
    message = str(error.value)
    assert str(path) in message and expected in message
    assert sha256(idx_bytes(corrupted)) in message


def test_gz_checksum_verifies_the_published_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fashion-MNIST's table holds sums of the .gz files: the same content re-gzipped differs.
    write_idx_dataset(tmp_path, monkeypatch, gz=True, dataset="fashion_mnist")
    gz_sums = {f"{n}.gz": sha256((tmp_path / f"{n}.gz").read_bytes()) for n in data.IDX_FILES}
    monkeypatch.setitem(data.CHECKSUMS, "fashion_mnist", gz_sums)
    ds = data.load(make_config(name="fashion_mnist", dir=str(tmp_path)))
    assert ds.train_images.shape == (10, 5, 4, 1)

    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), mtime=1))
    with pytest.raises(ConfigError, match=r"published \.gz file"):
        data.load(make_config(name="fashion_mnist", dir=str(tmp_path)))


def test_missing_file_names_the_path_and_both_accepted_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx_dataset(tmp_path, monkeypatch)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError) as error:
        data.load(make_config(name="mnist", dir=str(tmp_path)))
    message = str(error.value)
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in message
    assert "t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz" in message


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_dir(tmp_path: Path, name: str) -> None:
    # An empty data.dir means the download cache: tests/test_download.py.
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nowhere"))):
        data.load(make_config(name=name, dir=str(tmp_path / "nowhere")))


def test_image_label_count_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_idx_dataset(tmp_path, monkeypatch)
    labels = arrays["train-labels-idx1-ubyte"][:-1]
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels), gz=False)
    monkeypatch.setitem(data.CHECKSUMS, "mnist", {})  # no verification: the content changed
    with pytest.raises(ConfigError) as error:
        data.load(make_config(name="mnist", dir=str(tmp_path)))
    message = str(error.value)
    assert str(tmp_path / "train-images-idx3-ubyte") in message and "10 images" in message
    assert str(tmp_path / "train-labels-idx1-ubyte") in message and "9 labels" in message


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00\x00\x09\x03" + bytes(12), "not an IDX file of unsigned bytes with 3"),
        (idx_bytes(np.zeros((2, 5, 4), np.uint8))[:-1], "IDX header gives shape"),
        (b"\x1f\x8b not really gzip", "not a valid gzip file"),
    ],
)
def test_malformed_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, match: str
) -> None:
    write_idx_dataset(tmp_path, monkeypatch)
    monkeypatch.setitem(data.CHECKSUMS, "mnist", {})
    (tmp_path / "train-images-idx3-ubyte").unlink()
    gz = content.startswith(b"\x1f\x8b")
    path = tmp_path / ("train-images-idx3-ubyte.gz" if gz else "train-images-idx3-ubyte")
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        data.load(make_config(name="mnist", dir=str(tmp_path)))


def test_labels_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_dataset(tmp_path, monkeypatch)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 2, 10])), gz=False)
    monkeypatch.setitem(data.CHECKSUMS, "mnist", {})
    with pytest.raises(ConfigError, match=r"labels range over \[0, 10\], expected \[0, 10\)"):
        data.load(make_config(name="mnist", dir=str(tmp_path)))


def test_holdout_takes_the_last_train_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = write_idx_dataset(tmp_path, monkeypatch)
    ds = data.load(make_config(name="mnist", dir=str(tmp_path), holdout=0.3))  # 3 of 10
    train = arrays["train-images-idx3-ubyte"]
    np.testing.assert_array_equal(ds.train_images[..., 0], train[:7])
    np.testing.assert_array_equal(ds.test_images[..., 0], train[7:])
    np.testing.assert_array_equal(ds.test_labels, arrays["train-labels-idx1-ubyte"][7:])
    assert ds.eval_split == "validation"
    np.testing.assert_allclose(ds.mean, [train[:7].mean() / 255], rtol=1e-6)
    # A fraction that holds out none, or keeps none, of the 10 examples is one line naming both.
    for fraction in (0.01, 0.99, 1.0, -0.1):
        with pytest.raises(ConfigError, match=rf"^data.holdout={fraction} must be a fraction in"):
            data.load(make_config(name="mnist", dir=str(tmp_path), holdout=fraction))


def test_holdout_is_a_fraction_giving_10_000_of_mnist_and_a_share_of_digits() -> None:
    """The tuning default, 1/6, holds out exactly the 10,000 examples MNIST's used to be, and
    works on digits, whose 1,437 training examples a fixed 10,000 exceeded."""
    assert data.holdout_size(1 / 6, data.FACTS["mnist"].train_size, "mnist") == 10_000
    assert data.holdout_size(1 / 6, data.FACTS["cifar10"].train_size, "cifar10") == 8_333
    digits = data.load(make_config(name="digits", holdout=1 / 6))
    assert len(digits.test_labels) == 240 and len(digits.train_labels) == 1_437 - 240
    assert data.holdout_size(0.0, 5, "mnist") == 0


# -- CIFAR-10 -------------------------------------------------------------------------------------
def test_cifar_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = write_cifar_dataset(tmp_path, monkeypatch)
    ds = data.load(make_config(name="cifar10", dir=str(tmp_path)))
    assert ds.train_images.shape == (15, 32, 32, 3) and ds.test_images.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(ds.train_images, np.concatenate([i for i, _ in batches[:5]]))
    np.testing.assert_array_equal(ds.train_labels, np.concatenate([lb for _, lb in batches[:5]]))
    np.testing.assert_array_equal(ds.test_images, batches[5][0])
    np.testing.assert_array_equal(ds.test_labels, batches[5][1])
    assert ds.augment and ds.mean.shape == (3,) and ds.std.shape == (3,)
    scaled = ds.train_images / 255.0
    np.testing.assert_allclose(ds.mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(ds.std, scaled.std(axis=(0, 1, 2)), rtol=1e-5)
    assert not data.load(make_config(name="cifar10", dir=str(tmp_path), augment="none")).augment


def test_cifar_partial_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar_dataset(tmp_path, monkeypatch)
    monkeypatch.setitem(data.CHECKSUMS, "cifar10", {})
    (tmp_path / "test_batch.bin").write_bytes(bytes(3073 + 5))
    with pytest.raises(ConfigError, match="not a whole number of 3073-byte records"):
        data.load(make_config(name="cifar10", dir=str(tmp_path)))


# -- names and options ----------------------------------------------------------------------------
def test_unknown_dataset_name_lists_the_allowed_names() -> None:
    with pytest.raises(ConfigError) as error:
        data.load(make_config(name="imagenet"))
    message = str(error.value)
    assert "data.name='imagenet'" in message
    assert all(name in message for name in ("cifar10", "digits", "fashion_mnist", "mnist", "tfds"))


def test_unknown_augment_lists_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as error:
        data.load(make_config(augment="flip"))
    message = str(error.value)
    assert "data.augment='flip'" in message
    assert all(value in message for value in ("auto", "none", "crop_flip"))


@pytest.mark.parametrize("scale", ["standardize", "center"])
def test_scale_standardizes_or_keeps_centred_raw_pixels(scale: str) -> None:
    ds = data.load(make_config(scale=scale))
    x = np.asarray(data.normalize(ds.train_images, ds.mean, ds.std)).reshape(-1)
    assert abs(x.mean()) < 1e-3
    if scale == "standardize":
        assert x.std() == pytest.approx(1.0, rel=1e-3)
    else:  # raw pixel values minus their mean: the same spread as the uint8 values
        raw = ds.train_images.reshape(-1).astype(np.float64)
        np.testing.assert_allclose(x, raw - raw.mean(), atol=1e-3)
    with pytest.raises(ConfigError, match=r"data.scale='raw'.*center.*standardize"):
        data.load(make_config(scale="raw"))


def test_digits_split_is_fixed_and_complete() -> None:
    ds = data.load(make_config())
    assert ds.train_images.shape == (1437, 8, 8, 1) and ds.test_images.shape == (360, 8, 8, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_images.max() == 255
    assert (ds.num_classes, ds.augment, ds.eval_split) == (10, False, "test")
    again = data.load(make_config(augment="crop_flip"))
    np.testing.assert_array_equal(again.test_images, ds.test_images)
    np.testing.assert_array_equal(again.train_labels, ds.train_labels)
    assert again.augment
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


# -- on-device pieces -----------------------------------------------------------------------------
def test_normalize() -> None:
    images = jnp.array([[[[0, 255], [51, 102]]]], jnp.uint8)  # [1, 1, 2, 2]
    mean, std = np.array([0.5, 0.25], np.float32), np.array([0.5, 0.25], np.float32)
    out = jax.jit(data.normalize)(images, mean, std)
    assert out.dtype == jnp.float32 and out.shape == images.shape
    np.testing.assert_allclose(out, [[[[-1.0, 3.0], [-0.6, 0.6]]]], rtol=1e-6)


def crops_of(image: np.ndarray) -> list[np.ndarray]:
    """Every output `augment_crop_flip` may give for `image` [H, W, C]."""
    h, w, _ = image.shape
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    crops = [padded[t : t + h, left : left + w] for t in range(9) for left in range(9)]
    return crops + [crop[:, ::-1] for crop in crops]


def test_augment_crop_flip_gives_padded_crops_and_flips() -> None:
    image = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3) + 1  # no zero pixels
    images = jnp.broadcast_to(image, (64, 32, 32, 3))
    out = np.asarray(jax.jit(data.augment_crop_flip)(images, jax.random.key(0)))
    assert out.shape == images.shape and out.dtype == np.float32
    candidates = crops_of(image)
    chosen = [next(i for i, c in enumerate(candidates) if np.array_equal(c, o)) for o in out]
    flipped = [i >= 81 for i in chosen]
    assert any(flipped) and not all(flipped)
    assert len({i % 81 for i in chosen}) > 10  # many different offsets


def test_augment_crop_flip_flip_only_on_a_known_image() -> None:
    # Constant rows survive every crop offset up to the zero border; columns 4..27 of a crop always
    # come from the image, so whether those columns are mirrored tells the flip.
    image = np.tile(np.arange(1, 33, dtype=np.float32)[None, :, None], (32, 1, 1))
    out = np.asarray(
        data.augment_crop_flip(jnp.broadcast_to(image, (16, 32, 32, 1)), jax.random.key(3))
    )
    middle = out[:, 8:24, 4:28, 0]  # inside the image for every offset
    steps = np.diff(middle, axis=-1)
    assert np.all((steps == 1) | (steps == -1))
    assert np.all(np.all(steps == 1, axis=(1, 2)) | np.all(steps == -1, axis=(1, 2)))
    assert {bool(s) for s in np.all(steps == -1, axis=(1, 2))} == {True, False}


def test_augment_crop_flip_keys() -> None:
    augment = jax.jit(data.augment_crop_flip)
    images = jax.random.uniform(jax.random.key(1), (8, 32, 32, 3))
    key = jax.random.key(7)
    first = augment(images, key)
    np.testing.assert_array_equal(first, augment(images, key))
    assert not np.array_equal(first, augment(images, jax.random.key(8)))
    # A batch of per-example keys, typed or raw, is used as given.
    np.testing.assert_array_equal(first, augment(images, jax.random.split(key, 8)))
    raw = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(augment(images, raw), augment(images, jax.random.split(raw, 8)))
    # Under vmap over a leading member axis each member matches its own call.
    keys = jax.random.split(key, 2)
    stacked = jax.jit(jax.vmap(data.augment_crop_flip))(jnp.stack([images, images]), keys)
    np.testing.assert_array_equal(stacked[1], augment(images, keys[1]))


def test_epoch_permutation() -> None:
    key = jax.random.key(0)
    perm = data.epoch_permutation(key, 3, 100)
    assert sorted(np.asarray(perm).tolist()) == list(range(100))
    np.testing.assert_array_equal(perm, data.epoch_permutation(key, 3, 100))
    jitted = jax.jit(data.epoch_permutation, static_argnums=2)
    np.testing.assert_array_equal(perm, jitted(key, jnp.int32(3), 100))
    assert not np.array_equal(perm, data.epoch_permutation(key, 4, 100))
    assert not np.array_equal(perm, data.epoch_permutation(jax.random.key(1), 3, 100))


# -- TFDS -----------------------------------------------------------------------------------------
def test_tfds_through_mock_data() -> None:
    # `mock_data` (default policy AUTO) mocks `tfds.data_source` for the stock "mnist" builder: it
    # finds no metadata files and falls back to the builder's code (no TensorFlow, no files; the
    # given data_dir is ignored). Two limits of the mock shape `data._tfds`: split names must be
    # passed explicitly (the mocked split dict is empty) and batched reads (`__getitems__`) fail.
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load(make_config(name="tfds", tfds_name="mnist"))
        held = data.load(make_config(name="tfds", tfds_name="mnist", holdout=1 / 3))
    assert ds.train_images.shape == (6, 28, 28, 1) and ds.test_images.shape == (6, 28, 28, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert ds.num_classes == 10 and ds.eval_split == "test" and not ds.augment
    assert held.train_images.shape == (4, 28, 28, 1) and held.eval_split == "validation"


def test_tfds_errors_say_what_to_prepare(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ConfigError, match="must name a prepared TFDS dataset"):
        data.load(make_config(name="tfds"))
    with pytest.raises(ConfigError, match=r"no_such_dataset_xyz.*prepare the dataset first"):
        data.load(make_config(name="tfds", tfds_name="no_such_dataset_xyz"))
    # Known to TFDS but not prepared in data_dir: an error, not a download attempt.
    match = re.escape(f"data.dir={tmp_path})") + ".*set data.tfds_download=True"
    with pytest.raises(ConfigError, match=match):
        data.load(make_config(name="tfds", tfds_name="mnist", dir=str(tmp_path)))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("allow", [False, True])
def test_tfds_download_flag_reaches_tfds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allow: bool
) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    calls = []

    def data_source(name: str, **kwargs: object) -> None:
        calls.append((name, kwargs))
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "data_source", data_source)
    config = make_config(name="tfds", tfds_name="mnist", dir=str(tmp_path), tfds_download=allow)
    remedy = "could not download and prepare it" if allow else "set data.tfds_download=True"
    with pytest.raises(ConfigError, match=f"no network. .*{remedy}"):
        data.load(config)
    assert calls == [
        ("mnist", {"split": ["train", "test"], "data_dir": str(tmp_path), "download": allow})
    ]


# -- the real data --------------------------------------------------------------------------------
# Skipped on a laptop without the files; in CI (CI=true) missing data is a failure.
@pytest.mark.skipif(
    not (SHARED_DATA / "mnist").is_dir() and os.environ.get("CI") != "true",
    reason="no shared MNIST copy",
)
def test_real_mnist() -> None:
    ds = data.load(make_config(name="mnist", dir=str(SHARED_DATA / "mnist")))
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (
        10000,
        28,
        28,
        1,
    )
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(ds.train_labels).tolist() == train_counts
    assert np.bincount(ds.test_labels).tolist() == test_counts
    np.testing.assert_allclose(ds.mean, [0.1307], atol=1e-4)  # the well-known MNIST statistics
    np.testing.assert_allclose(ds.std, [0.3081], atol=1e-4)


# -- dataset facts ---------------------------------------------------------------------------------
def _loadable(name: str) -> ml_collections.ConfigDict:
    directory = {"mnist": SHARED_DATA / "mnist", "cifar10": SHARED_DATA / "cifar10"}.get(name, "")
    return make_config(name=name, dir=str(directory))


@pytest.mark.parametrize("name", ["digits", "mnist", "cifar10"])
def test_facts_match_the_loaded_dataset(name: str) -> None:
    if name != "digits" and not (SHARED_DATA / name).is_dir() and os.environ.get("CI") != "true":
        pytest.skip(f"no shared {name} copy")
    config = _loadable(name)
    assert data.facts(config) == data.Facts.of(data.load(config))
    # With a hold-out split the facts still describe the dataset as stored.
    config.holdout = 0.1
    held = data.holdout_size(0.1, data.facts(config).train_size, name)
    assert data.facts(config).train_size == len(data.load(config).train_labels) + held


def test_every_registered_dataset_has_facts() -> None:
    """Those of fixed size from the table (Fashion-MNIST has MNIST's format and sizes, and no copy
    here to load); `tfds` datasets from the data."""
    # Every fixed-size dataset data.py registers has a row (tests register cached ones of their own,
    # which `facts` reads from the data like tfds).
    assert set(data.FACTS) == {"digits", "mnist", "fashion_mnist", "cifar10"}
    assert set(data.FACTS) <= set(data.DATASETS.names())
    assert data.facts(make_config(name="fashion_mnist")) == data.FACTS["mnist"]
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        facts = data.facts(make_config(name="tfds", tfds_name="mnist", holdout=0.5))
    assert facts == data.Facts(train_size=6, test_size=6, num_classes=10, input_shape=(28, 28, 1))
    with pytest.raises(ConfigError, match=re.escape("data.name='nope'")):
        data.facts(make_config(name="nope"))


def test_facts_chance_and_epochs_to_steps() -> None:
    mnist = data.FACTS["mnist"]
    assert mnist.chance == pytest.approx(1 / 10)
    assert mnist.steps(2, 128) == 938  # 120,000 examples / 128 = 937.5: the last batch included
    assert mnist.steps(1, 100) == 600
    assert data.FACTS["digits"].steps(0.01, 128) == 1

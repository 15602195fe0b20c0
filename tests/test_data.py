"""The IDX reader, the local-folder search order, and real downloads from a server on 127.0.0.1."""

import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from polylenet import data
from polylenet.data import DATASETS, FILES, DataError, DatasetInfo, download, load_data, read_idx


def write_idx(path: Path, array: np.ndarray) -> bytes:
    raw = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    packed = gzip.compress(raw, mtime=0)
    path.write_bytes(packed)
    return packed


def make_dataset(folder: Path, train=20, test=10, seed=0) -> dict:
    """A tiny valid data set in the four standard files; returns the arrays and SHA-256 sums."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(train) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(test) % 10,
    }
    sums = {name: hashlib.sha256(write_idx(folder / name, a)).hexdigest() for name, a in arrays.items()}
    return {"arrays": arrays, "sha256": sums}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No POLYLENET_DATA, and a cache inside tmp_path."""
    monkeypatch.delenv("POLYLENET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


# ---- the IDX reader -----------------------------------------------------------------------

def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a) and read_idx(tmp_path / "a.gz").dtype == np.uint8


@pytest.mark.parametrize("raw, message", [
    (b"\x00\x01", "too short"),
    (b"\x12\x34\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", r"says \(5,\).*holds 2"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
])
def test_read_idx_rejects_bad_files(tmp_path, raw, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_not_gzip_is_named(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"plain bytes")
    with pytest.raises(DataError, match="x.gz: cannot read"):
        read_idx(path)


# ---- where the files come from ------------------------------------------------------------

def test_search_order_data_dir_then_env_then_cache(isolated, monkeypatch):
    explicit = make_dataset(isolated / "explicit" / "fashion-mnist", seed=1)
    env = make_dataset(isolated / "env" / "fashion-mnist", seed=2)
    cached = make_dataset(isolated / "cache" / "polylenet" / "fashion-mnist", seed=3)
    _write_sums(isolated / "cache" / "polylenet" / "fashion-mnist", cached["sha256"])  # else the canonical ones
    monkeypatch.setenv("POLYLENET_DATA", str(isolated / "env"))
    def first(d):
        return d["arrays"]["train-images-idx3-ubyte.gz"]
    assert np.array_equal(load_data(data_dir=isolated / "explicit").train_images, first(explicit))
    assert np.array_equal(load_data().train_images, first(env))
    monkeypatch.delenv("POLYLENET_DATA")
    assert np.array_equal(load_data(allow_download=False).train_images, first(cached))
    # A data_dir may also be the folder holding the four files itself.
    assert load_data(data_dir=isolated / "explicit" / "fashion-mnist").source.name == "fashion-mnist"


def test_local_folder_is_checked_structurally(isolated):
    folder = isolated / "d" / "fashion-mnist"
    make_dataset(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(7) % 10)
    with pytest.raises(DataError, match="holds 10 images but t10k-labels-idx1-ubyte.gz 7 labels"):
        load_data(data_dir=folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(10, 12))
    with pytest.raises(DataError, match="label 12"):
        load_data(data_dir=folder)


def test_offline_with_nothing_found_says_where_to_put_files(isolated):
    with pytest.raises(DataError) as info:
        load_data("mnist", allow_download=False)
    message = str(info.value)
    assert "mnist not found" in message and "train-images-idx3-ubyte.gz" in message
    assert str(isolated / "cache" / "polylenet" / "mnist") in message and "POLYLENET_DATA" in message


@pytest.mark.skipif(not os.environ.get("POLYLENET_DATA"), reason="POLYLENET_DATA not set (tox sets it)")
def test_shared_fashion_mnist_is_the_real_data_set():
    ds = load_data("fashion-mnist")
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert sorted(ds.checksums) == sorted(FILES)  # every file hashed against the folder's SHA256SUMS


# ---- downloads from a real HTTP server on loopback ----------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    truncate = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.truncate:
            return super().do_GET()
        body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])  # then hang up: a truncated transfer


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/served on 127.0.0.1; yields (url, folder, handler class)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = type("Handler", (_Handler,), {})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(folder), **k))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder, handler
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_download_lands_in_the_cache(isolated, server, monkeypatch):
    url, served, _ = server
    fixture = make_dataset(served)
    monkeypatch.setitem(DATASETS, "fashion-mnist",
                        DatasetInfo("fashion-mnist", (url,), fixture["sha256"], DATASETS["fashion-mnist"].classes))
    ds = load_data("fashion-mnist")
    cache = isolated / "cache" / "polylenet" / "fashion-mnist"
    assert ds.source == cache and _leftovers(cache) == sorted(FILES)
    assert np.array_equal(ds.test_images, fixture["arrays"]["t10k-images-idx3-ubyte.gz"])


def test_checksum_mismatch_leaves_nothing(isolated, server):
    url, served, _ = server
    make_dataset(served)  # the real Fashion-MNIST checksums cannot match these bytes
    dest = isolated / "dest"
    with pytest.raises(DataError, match="checksum mismatch"):
        download("fashion-mnist", dest, mirrors=[url])
    assert _leftovers(dest) == []


def test_truncated_transfer_leaves_nothing(isolated, server):
    url, served, handler = server
    fixture = make_dataset(served)
    handler.truncate = True
    dest = isolated / "dest"
    with pytest.raises(DataError, match="could not download train-images"):
        download("fashion-mnist", dest, mirrors=[url], sha256=fixture["sha256"])
    assert _leftovers(dest) == []


def test_next_mirror_is_tried_and_server_down_is_clear(isolated, server):
    url, served, _ = server
    fixture = make_dataset(served)
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/"
    dest = download("fashion-mnist", isolated / "ok", mirrors=[down, url], sha256=fixture["sha256"], timeout=5)
    assert _leftovers(dest) == sorted(FILES)
    with pytest.raises(DataError, match=r"(?s)could not download .*127\.0\.0\.1.*(refused|Connection)"):
        download("fashion-mnist", isolated / "down", mirrors=[down], sha256=fixture["sha256"], timeout=5)
    assert _leftovers(isolated / "down") == []


def _write_sums(folder: Path, sums: dict) -> None:
    (folder / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())))


def test_a_folder_with_sha256sums_is_hashed_against_it(isolated):
    folder = isolated / "data" / "fashion-mnist"
    fixture = make_dataset(folder)
    _write_sums(folder, fixture["sha256"])
    assert load_data(data_dir=isolated / "data").checksums == fixture["sha256"]
    make_dataset(isolated / "other", seed=1)  # valid IDX files, other pixels: only a hash can tell
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes((isolated / "other" / "t10k-images-idx3-ubyte.gz").read_bytes())
    damaged = r"t10k-images-idx3-ubyte\.gz: SHA-256 [0-9a-f]{64} does not match .*SHA256SUMS"
    with pytest.raises(DataError, match=damaged):
        load_data(data_dir=isolated / "data")


def test_a_folder_without_sums_is_checked_structurally_only(isolated):
    make_dataset(isolated / "plain")
    assert load_data(data_dir=isolated / "plain").checksums == {}


def test_a_damaged_cached_file_is_refused_by_the_canonical_checksum(isolated):
    make_dataset(isolated / "cache" / "polylenet" / "fashion-mnist")  # not the canonical bytes
    with pytest.raises(DataError, match="canonical checksum"):
        load_data("fashion-mnist", allow_download=False)


def test_download_replaces_a_file_already_there_that_fails_its_checksum(isolated, server):
    url, served, _ = server
    fixture = make_dataset(served)
    dest = isolated / "dest"
    make_dataset(dest, seed=5)  # four stale files of the right names
    download("fashion-mnist", dest, mirrors=[url], sha256=fixture["sha256"])
    assert {f: data.sha256_of(dest / f) for f in FILES} == fixture["sha256"]
    assert data.cache_dir().name == "polylenet"

"""Fetching MNIST for the demo, against a local HTTP server through torchvision's mirror setting (no network)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import MNIST

from vitlab.cli import main
from vitlab.data.datasets import load_splits
from vitlab.data.fetch import FetchError, fetch_mnist


def idx_gz(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return gzip.compress(header + a.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def mirror(tmp_path: Path, mnist: Path, monkeypatch) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """A server on 127.0.0.1 with the four idx .gz files of 50 + 20 real digits; torchvision's MD5s set to theirs."""
    with np.load(mnist) as f:
        arrays = {"x_train": f["x_train"][:50], "y_train": f["y_train"][:50]}
        arrays.update(x_test=f["x_test"][:20], y_test=f["y_test"][:20])
    served = tmp_path / "served"
    served.mkdir()
    names = {
        "train-images-idx3-ubyte.gz": "x_train",
        "train-labels-idx1-ubyte.gz": "y_train",
        "t10k-images-idx3-ubyte.gz": "x_test",
        "t10k-labels-idx1-ubyte.gz": "y_test",
    }
    for name, key in names.items():
        (served / name).write_bytes(idx_gz(arrays[key]))
    md5 = {name: hashlib.md5((served / name).read_bytes()).hexdigest() for name in names}
    monkeypatch.setattr(MNIST, "resources", [(name, md5[name]) for name, _ in MNIST.resources])
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", arrays
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def closed_port() -> str:
    server = http.server.HTTPServer(("127.0.0.1", 0), QuietHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/"


def test_fetch_mnist_from_a_mirror_writes_the_npz_the_recipe_reads(tmp_path: Path, mirror) -> None:
    url, arrays = mirror
    path = fetch_mnist(tmp_path / "data", mirrors=[closed_port(), url])  # the first mirror is down: next one
    assert path == tmp_path / "data" / "mnist.npz"
    with np.load(path) as f:
        assert sorted(f.files) == ["x_test", "x_train", "y_test", "y_train"]
        for k, v in arrays.items():
            assert f[k].dtype == np.uint8 and np.array_equal(f[k], v), k
    assert len(load_splits(path).test) == 20
    assert fetch_mnist(tmp_path / "data", mirrors=[closed_port()]) == path  # present: nothing fetched


def test_checksums_are_verified(tmp_path: Path, mirror, monkeypatch) -> None:
    url, _ = mirror
    monkeypatch.setattr(MNIST, "resources", [(name, "0" * 32) for name, _ in MNIST.resources])
    with pytest.raises(FetchError, match="MD5"):
        fetch_mnist(tmp_path / "data", mirrors=[url])
    assert not (tmp_path / "data" / "mnist.npz").exists()


def test_cli_fetches_and_says_what_to_do_offline(tmp_path: Path, mirror, capsys) -> None:
    url, _ = mirror
    offline = closed_port()
    assert main(["data", "mnist", "--out", str(tmp_path / "none"), "--mirror", offline]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"could not download MNIST from {offline}" in err and "place mnist.npz" in err and "DATA=" in err
    assert main(["data", "mnist", "--out", str(tmp_path / "d"), "--mirror", url]) == 0
    assert "downloaded and checked" in capsys.readouterr().err
    assert main(["data", "mnist", "--out", str(tmp_path / "d"), "--mirror", offline]) == 0
    assert "already there" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        main(["data", "mnist", "--help"])
    assert exit.value.code == 0 and "--mirror" in capsys.readouterr().out

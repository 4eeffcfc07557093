"""The HTTP API through FastAPI's TestClient: every route, every error answer, and that the server keeps serving."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vitlab.data import load_image
from vitlab.infer import Predictor
from vitlab.serve import ServeConfig, ServedModel, check_exposure, create_app, is_loopback, model_spec

from .conftest import MNIST_VIT

NOTE = "a test stand-in: pretends its attention is local, like a window-attention family"


@pytest.fixture(scope="module")
def no_attention() -> Predictor:
    """The MNIST ViT posing as a family without a global attention map (through the interface only)."""
    predictor = Predictor.from_pretrained(MNIST_VIT)
    predictor.model.attention_note = NOTE
    assert not predictor.model.supports_attention
    return predictor


@pytest.fixture(scope="module")
def client(mnist_predictor: Predictor, no_attention: Predictor):
    config = ServeConfig(max_upload_mb=0.05, max_wait_ms=1)
    app = create_app([ServedModel("mnist", mnist_predictor), ServedModel("local", no_attention)], config)
    with TestClient(app) as c:
        yield c


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with one tiny data chunk: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _reason(tmp_path: Path, data: bytes, name: str) -> str:
    """The one line ``vitlab predict`` gives for a file of these bytes called ``name``."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError) as err:
        load_image(path, "L")
    return str(err.value).replace(str(path), name)


def test_page_is_served(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for element in ('id="model"', 'id="file"', 'id="topk"', 'id="overlay"', 'id="opacity"', 'id="preprocessing"'):
        assert element in r.text


def test_health_ready_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "ready": True}
    assert client.get("/readyz").json() == {"status": "ready", "models": ["mnist", "local"]}
    assert "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/attention", "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/predict"]["post"]["requestBody"]["content"]


def test_models_listing(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    m = models["mnist"]
    assert m["architecture"] == "vit" and m["num_classes"] == 10 and m["classes"] == [str(i) for i in range(10)]
    assert m["input_shape"] == [1, 28, 28] and m["preprocessing"]["input_size"] == [1, 28, 28]
    assert "centre-crop 28x28" in m["preprocessing"]["description"]
    assert m["attention"] == {"supported": True, "note": None}
    assert models["local"]["attention"] == {"supported": False, "note": NOTE}


def test_predict_matches_the_predict_record(client: TestClient, mnist_predictor: Predictor, digits, tmp_path) -> None:
    data, label = digits[0]
    (tmp_path / "seven.png").write_bytes(data)
    expected = mnist_predictor([tmp_path / "seven.png"], topk=3)[0].to_dict()
    del expected["error"]  # predict --format json leaves it out of good records
    for r in (
        client.post("/v1/predict?model=mnist&topk=3", files={"file": ("seven.png", data, "image/png")}),
        client.post("/v1/predict?model=mnist&topk=3", content=data, headers={"content-type": "image/png"}),
    ):
        assert r.status_code == 200, r.text
        got = r.json()
        timing = got.pop("timing")
        assert got.pop("model") == "mnist"
        assert set(timing) == {"receive_decode_ms", "queue_ms", "forward_ms", "batch_size"}
        assert got["indices"] == expected["indices"] and got["labels"][0] == str(label)
        assert got["probs"] == pytest.approx(expected["probs"], abs=1e-5)
        assert set(got) == set(expected)
    assert got["source"] == "upload"  # a raw body has no name


def test_model_choice_errors(client: TestClient, digits) -> None:
    data = digits[0][0]
    r = client.post("/v1/predict?model=nope", content=data)
    assert r.status_code == 404 and r.json()["error"] == "unknown model 'nope'; served: mnist, local"
    r = client.post("/v1/predict", content=data)  # two served: the model must be named
    assert r.status_code == 422 and "name the model" in r.json()["error"]
    r = client.post("/v1/predict?model=mnist&topk=0", content=data)
    assert r.status_code == 422 and r.json()["error"].startswith("topk:")


def test_upload_over_the_limit_is_413(client: TestClient) -> None:
    big = b"\0" * (200 * 1024)  # limit: 0.05 MB plus the multipart slack
    r = client.post("/v1/predict?model=mnist", content=big)
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]

    def chunks():  # no Content-Length: counted as the chunks arrive
        for _ in range(50):
            yield b"\0" * 8192

    r = client.post("/v1/predict?model=mnist", content=chunks())
    assert r.status_code == 413
    # a multipart file over the limit though the envelope is within the slack
    r = client.post("/v1/predict?model=mnist", files={"file": ("x.png", b"\0" * (60 * 1024), "image/png")})
    assert r.status_code == 413


def test_bad_images_get_predicts_reason(client: TestClient, photos: Path, tmp_path: Path) -> None:
    cat = (photos / "chelsea.png").read_bytes()
    cases = {
        "notes.png": (b"this is not a picture\n", 415),
        "truncated.png": (cat[:2000], 422),
        "empty.png": (b"", 422),
        "bomb.png": (_png_with_size(30000, 30000), 422),
    }
    for name, (data, status) in cases.items():
        r = client.post("/v1/predict?model=mnist", files={"file": (name, data, "image/png")})
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"] == _reason(tmp_path, data, name), name
    assert "decompression bomb" in _reason(tmp_path, cases["bomb.png"][0], "bomb.png")
    assert client.get("/readyz").status_code == 200  # and it keeps serving


def test_nothing_in_a_request_is_a_path(client: TestClient, photos: Path, digits) -> None:
    real = str(photos / "chelsea.png")
    # a body naming a real image is text, not that image
    r = client.post("/v1/predict?model=mnist", content=real.encode())
    assert r.status_code == 415
    # a file name naming a real image or climbing out is only echoed back, cleaned
    r = client.post("/v1/predict?model=mnist", files={"file": ("../../etc/passwd", digits[0][0], "image/png")})
    assert r.status_code == 200 and r.json()["source"] == "passwd"
    r = client.post("/v1/predict?model=mnist", files={"file": (real, b"not an image", "image/png")})
    assert r.status_code == 415 and r.json()["error"].startswith("chelsea.png: not an image")
    r = client.post("/v1/predict?model=../../examples/mnist_vit", content=digits[0][0])
    assert r.status_code == 404


def test_attention_overlay(client: TestClient, digits) -> None:
    data = digits[0][0]
    r = client.post("/v1/attention?model=mnist&method=rollout", content=data)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-vitlab-description"].startswith("attention rollout of the [CLS] token through blocks 1-6")
    img = Image.open(io.BytesIO(r.content))
    colours = np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)
    assert img.size == (224, 224) and len(colours) > 20  # a heat map, not a flat image
    heat = Image.open(io.BytesIO(client.post("/v1/attention?model=mnist&method=rollout&alpha=1", content=data).content))
    assert heat.size == (224, 224) and heat.tobytes() != img.tobytes()
    # the CLI's options: raw attention of every head of two blocks -> the panel figure
    r = client.post("/v1/attention?model=mnist&method=raw&layer=0,-1&head=all", content=data)
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] > 224
    assert "every head" in r.headers["x-vitlab-description"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("method=gradcam", "method must be one of raw, rollout"),
        ("layer=first", "layer: expected 'all' or block numbers"),
        ("layer=9", "block index 9 is out of range for a 6-block model"),
        ("head=7", "head 7 is out of range for a model with 4 heads"),
        ("method=rollout&head=all", "rollout fuses heads by mean, max, min"),
        ("alpha=2", "alpha:"),
    ],
)
def test_attention_errors(client: TestClient, digits, query: str, message: str) -> None:
    r = client.post(f"/v1/attention?model=mnist&{query}", content=digits[0][0])
    assert r.status_code == 422 and message in r.json()["error"]


def test_attention_of_a_family_without_global_maps(client: TestClient, digits) -> None:
    r = client.post("/v1/attention?model=local&method=rollout", content=digits[0][0])
    assert r.status_code == 422
    assert r.json()["error"] == f"local: the 'vit' model has no global attention map: {NOTE}"


def test_metrics(client: TestClient, digits) -> None:
    client.post("/v1/predict?model=mnist", content=digits[1][0])
    client.post("/v1/predict?model=nope", content=digits[1][0])
    text = client.get("/metrics").text
    assert 'vitlab_requests_total{route="/v1/predict",status="200"}' in text
    assert 'vitlab_requests_total{route="/v1/predict",status="404"}' in text
    assert 'vitlab_request_seconds_bucket{le="0.5",route="/v1/predict"}' in text
    assert 'vitlab_batch_size_bucket{le="1.0",model="mnist"}' in text
    assert 'vitlab_queue_depth{model="mnist"} 0.0' in text
    client.get("/no/such/route/123")
    assert 'route="other",status="404"' in client.get("/metrics").text  # unknown paths share one label


def test_ready_only_after_loading(mnist_predictor: Predictor, digits) -> None:
    go = threading.Event()

    def loader() -> list[ServedModel]:
        assert go.wait(30)
        return [ServedModel("mnist", mnist_predictor)]

    with TestClient(create_app(loader)) as c:
        assert c.get("/healthz").json() == {"status": "ok", "ready": False}
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "loading" in r.json()["error"]
        assert c.post("/v1/predict", content=digits[0][0]).status_code == 503
        go.set()
        for _ in range(100):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert c.get("/readyz").status_code == 200
        assert c.post("/v1/predict", content=digits[0][0]).status_code == 200


def test_loading_failure_is_reported() -> None:
    failures: list[BaseException] = []

    def loader() -> list[ServedModel]:
        raise ValueError("broken.safetensors: not a checkpoint")

    with TestClient(create_app(loader, on_load_error=failures.append)) as c:
        for _ in range(100):
            if failures:
                break
            time.sleep(0.02)
        assert str(failures[0]) == "broken.safetensors: not a checkpoint"
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["error"] == "loading failed: broken.safetensors: not a checkpoint"


def test_full_queue_is_503_with_retry_after(mnist_predictor: Predictor, digits) -> None:
    app = create_app([ServedModel("mnist", mnist_predictor)], ServeConfig(max_batch=1, max_queue=2, max_wait_ms=0))
    release = threading.Event()
    with TestClient(app) as c:
        batcher = app.state.load_state["entries"]["mnist"].batcher
        forward = batcher.forward
        batcher.forward = lambda x: (release.wait(30), forward(x))[1]  # the model's thread is stuck
        statuses: list[int] = []
        threads = [
            threading.Thread(target=lambda: statuses.append(c.post("/v1/predict", content=digits[0][0]).status_code))
            for _ in range(3)
        ]
        for t in threads:  # one in the forward pass, two waiting: the queue is full
            t.start()
        for _ in range(200):
            if batcher.depth == 2:
                break
            time.sleep(0.02)
        r = c.post("/v1/predict", content=digits[0][0])
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "waiting already" in r.json()["error"]
        release.set()
        for t in threads:
            t.join(30)
        assert statuses == [200, 200, 200]
        assert c.post("/v1/predict", content=digits[0][0]).status_code == 200  # serving again
        assert 'vitlab_requests_total{route="/v1/predict",status="503"} 1.0' in c.get("/metrics").text


def test_api_key(mnist_predictor: Predictor, digits) -> None:
    app = create_app([ServedModel("mnist", mnist_predictor)], ServeConfig(api_key="s3cret"))
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
        for path in ("/v1/models", "/metrics"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/predict", content=digits[0][0]).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200
        r = c.post("/v1/predict", content=digits[0][0], headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200


def test_binding_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org") and not is_loopback("192.168.1.4")
    check_exposure("127.0.0.1", None, False)
    check_exposure("0.0.0.0", "key", False)
    check_exposure("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="--api-key-env VAR"):
        check_exposure("0.0.0.0", None, False)


def test_model_names(tmp_path: Path) -> None:
    assert model_spec(str(MNIST_VIT)) == ("mnist_vit", str(MNIST_VIT))
    assert model_spec("vit_tiny_patch16_224") == ("vit_tiny_patch16_224", "vit_tiny_patch16_224")
    assert model_spec(f"digits={MNIST_VIT}") == ("digits", str(MNIST_VIT))
    with pytest.raises(ValueError, match="cannot name a model in URLs"):
        model_spec("a b=c")
    with pytest.raises(ValueError):
        ServeConfig(max_upload_mb=0)
    with pytest.raises(ValueError):
        ServeConfig(api_key="")

"""The page in a real browser: Debian's chromium, headless, driven by Playwright for Python.

Starts ``vitlab serve`` on a free loopback port, opens the page, uploads a photo, waits for the top-k list and
the attention overlay, checks what they show, and saves a screenshot (``$VITLAB_ARTIFACTS`` or the test's
temporary directory). Skipped, with the reason, only when the browser is not installed (``make browser``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from .conftest import MNIST_VIT, ROOT, ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _artifacts(tmp_path: Path) -> Path:
    out = Path(os.environ.get("VITLAB_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (make browser: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess("--model", str(MNIST_VIT), "--model", "tiny=vit_tiny_patch16_224")
    yield srv
    assert srv.stop() == 0


def _read_page(page) -> tuple[list[tuple[str, float]], dict]:
    page.wait_for_selector("#topk li.pred", timeout=30_000)
    page.wait_for_selector("#overlay:not([hidden])", timeout=30_000)
    bars = page.eval_on_selector_all(
        "#topk li.pred", "els => els.map(e => [e.dataset.label, parseFloat(e.dataset.prob)])"
    )
    overlay = page.eval_on_selector(
        "#overlay",
        """img => {
            const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data;
            const colours = new Set();
            for (let i = 0; i < d.length; i += 4 * 97) colours.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
            return {w: img.naturalWidth, h: img.naturalHeight, colours: colours.size,
                    opacity: getComputedStyle(img).opacity};
        }""",
    )
    return [(label, prob) for label, prob in bars], overlay


def test_the_page_predicts_and_overlays(browser, server: ServerProcess, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    try:
        page.goto(server.url + "/", timeout=30_000)
        page.wait_for_selector("#model option", state="attached", timeout=30_000)
        assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["mnist_vit", "tiny"]
        assert "resize the shorter side to 28 px" in page.inner_text("#preprocessing")

        # The MNIST ViT on the cat photo: ten digit classes, probabilities that add up, a rollout overlay.
        page.set_input_files("#file", str(ROOT / "tests" / "fixtures" / "photos" / "chelsea.png"))
        bars, overlay = _read_page(page)
        assert len(bars) == 5 and {label for label, _ in bars} <= {str(i) for i in range(10)}
        probs = [p for _, p in bars]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert overlay["w"] == overlay["h"] == 224 and overlay["colours"] > 10  # a heat map, not a blank
        assert overlay["opacity"] == "0.5"
        page.fill("#opacity", "80")
        assert page.eval_on_selector("#overlay", "img => getComputedStyle(img).opacity") == "0.8"
        assert page.inner_text("#attention-note").startswith("Showing attention rollout of the [CLS] token")
        assert page.inner_text("#status").startswith("chelsea.png: ")

        # Another model on the same photo: ImageNet names, 224x224 preprocessing in words.
        page.select_option("#model", "tiny")
        page.wait_for_function("document.querySelector('#preprocessing').textContent.includes('224x224')")
        page.wait_for_function(
            "[...document.querySelectorAll('#topk li.pred')].some(li => !/^[0-9]$/.test(li.dataset.label))",
            timeout=30_000,
        )
        bars, overlay = _read_page(page)
        assert len(bars) == 5 and overlay["colours"] > 10
        page.select_option("#model", "mnist_vit")
        _read_page(page)
        shot = _artifacts(tmp_path) / "serve_page_chelsea.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        page.close()


def test_the_page_reads_a_digit(browser, server: ServerProcess, digits, tmp_path: Path) -> None:
    """The README's screenshot: the MNIST ViT predicting a test digit, with its rollout overlaid."""
    data, label = digits[0]
    digit = tmp_path / f"mnist_test0_label{label}.png"
    digit.write_bytes(data)
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    try:
        page.goto(server.url + "/", timeout=30_000)
        page.wait_for_selector("#model option", state="attached", timeout=30_000)
        page.set_input_files("#file", str(digit))
        bars, overlay = _read_page(page)
        assert bars[0][0] == str(label) and bars[0][1] > 0.9
        assert overlay["colours"] > 10
        assert page.inner_text("#status").startswith(f"{digit.name}: {label} (")
        page.fill("#opacity", "45")
        page.screenshot(path=str(_artifacts(tmp_path) / "serve_page_mnist.png"), full_page=True)
    finally:
        page.close()


def test_the_page_reports_a_bad_file(browser, server: ServerProcess, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture\n")
    page = browser.new_page()
    try:
        page.goto(server.url + "/", timeout=30_000)
        page.wait_for_selector("#model option", state="attached", timeout=30_000)
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#status.error", timeout=30_000)
        assert page.inner_text("#status") == "notes.png: not an image (or a format Pillow cannot read)"
    finally:
        page.close()


def test_chromium_is_there_when_make_test_ran() -> None:
    """CI runs ``make test``, whose ``browser`` step installs chromium; a skip there would hide the page test."""
    if os.environ.get("CI") and shutil.which("apt-get") and os.geteuid() == 0:
        assert CHROMIUM.is_file(), "make browser should have installed chromium"

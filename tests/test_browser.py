"""The web page in a real browser: ``mlx-caption serve`` on a free port, driven by headless
Chromium through Playwright (Debian's /usr/bin/chromium, no ``playwright install``).

Screenshots go to ``$MLX_CAPTION_ARTIFACTS`` (default ``./test-artifacts``, git-ignored).
"""

import mlx_caption  # noqa: F401, I001  (loads the optimized BLAS before mlx.core)

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prerequisites import require, require_module

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UPLOAD_INPUT = '[data-testid="stFileUploader"] input[type=file]'
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
TIMEOUT_MS = 60_000

require(Path(CHROMIUM).exists(), f"{CHROMIUM} (Debian's chromium: apt-get install chromium)")
require_module("playwright.sync_api", "pip's playwright (the [dev] extra)")
require_module("streamlit", "streamlit (the [app] extra)")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("MLX_CAPTION_ARTIFACTS", "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command() -> list[str]:
    exe = Path(sys.executable).parent / "mlx-caption"
    if exe.exists():
        return [str(exe), "serve"]
    return [sys.executable, "-m", "mlx_caption.cli", "serve"]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the server did not answer within {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A trained tiny checkpoint, its synthetic images, and the page serving it."""
    from app_fixtures import synthetic_images, tiny_checkpoint

    root = tmp_path_factory.mktemp("browser")
    paths, captions = synthetic_images(root / "synthetic", images=4)
    firsts = [captions[5 * i] for i in range(len(paths))]
    ckpt = tiny_checkpoint(root / "ckpt", captions, images=paths, image_captions=firsts, steps=120)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*serve_command(), "--checkpoint", str(ckpt), "--port", str(port)],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(url, proc, log)
        yield {"url": url, "checkpoint": ckpt, "images": paths, "root": root, "log": log}
    finally:
        # `serve` exec()s Streamlit, so this pid is the server itself.
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        shutil.copy(log, artifacts_dir() / "browser-server.log")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector(IDLE)
    page.wait_for_selector(UPLOAD_INPUT, state="attached")
    return page


def test_upload_shows_the_checkpoints_caption(served, browser):
    from playwright.sync_api import expect

    image = served["images"][0]
    # The same file, checkpoint and decoding (the page's default: greedy, the decoder's
    # default max length) through the library.
    expected = mlx_caption.caption(image, checkpoint=served["checkpoint"], strategy="greedy")[0]
    assert len(expected.text.split()) >= 3

    page = open_page(browser, served["url"])
    try:
        page.set_input_files(UPLOAD_INPUT, str(image))
        caption = page.locator("h3").filter(has_text=expected.text)
        expect(caption).to_be_visible()
        expect(caption).to_have_text(expected.text)
        page.wait_for_selector(IDLE)
        # One heat-map thumbnail per word, each labelled with its word.
        labels = page.locator('[data-testid="stExpander"] [data-testid="stImageCaption"]')
        expect(labels).to_have_text(expected.text.split())
        page.screenshot(path=str(artifacts_dir() / "browser-caption.png"), full_page=True)

        # A file that is not an image: a message on the page, and the page keeps serving.
        fake = served["root"] / "not-an-image.png"
        fake.write_bytes(b"this is plain text, not a picture\n" * 20)
        page.set_input_files(UPLOAD_INPUT, str(fake))
        error = page.locator('[data-testid="stAlertContentError"]').filter(
            has_text="not-an-image.png"
        )
        expect(error).to_contain_text("not an image this page can read")
        page.wait_for_selector(IDLE)
        expect(caption).to_be_visible()
        expect(page.get_by_text("Traceback")).to_have_count(0)
        page.screenshot(path=str(artifacts_dir() / "browser-error.png"), full_page=True)
    finally:
        page.close()


def test_drawing_is_captioned(served, browser):
    from playwright.sync_api import expect

    page = open_page(browser, served["url"])
    try:
        page.get_by_role("tab", name="Draw").click()
        canvas = page.locator("canvas.upper-canvas")
        expect(canvas).to_be_visible()
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + 60, box["y"] + 60)
        page.mouse.down()
        for i in range(25):
            page.mouse.move(box["x"] + 60 + 5 * i, box["y"] + 60 + 4 * (i % 8))
        page.mouse.up()
        panel = page.get_by_role("tabpanel", name="Draw")
        expect(panel.get_by_text("drawing", exact=True)).to_be_visible()
        expect(panel.locator("h3")).to_have_count(1)
        assert panel.locator("h3").inner_text().strip()
        page.wait_for_selector(IDLE)
        page.screenshot(path=str(artifacts_dir() / "browser-drawing.png"), full_page=True)
    finally:
        page.close()

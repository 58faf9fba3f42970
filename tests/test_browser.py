"""The web page in a real browser: ``mlx-caption serve`` on a free port, driven by headless
Chromium through Playwright (Debian's /usr/bin/chromium, no ``playwright install``).

The module first trains a shapes model that knows its shapes (``app_fixtures.
shapes_checkpoint``: the longest part of these tests), so a caption can be checked for what
it says about a drawing.

Screenshots go to ``$MLX_CAPTION_ARTIFACTS`` (default ``./test-artifacts``, git-ignored).
"""

import mlx_caption  # noqa: F401, I001  (loads the optimized BLAS before mlx.core)

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
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


@contextlib.contextmanager
def serving(root: Path, name: str, *args: str):
    """``mlx-caption serve ARGS`` on a free port (run in ``root``); yields its local URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*serve_command(), *args, "--port", str(port)],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        # `serve` exec()s Streamlit, so this pid is the server itself.
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        shutil.copy(log, artifacts_dir() / f"browser-{name}.log")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A captioner trained on one synthetic shape per image, long enough to know them, and
    a few of its test images."""
    from app_fixtures import shapes_checkpoint

    root = tmp_path_factory.mktemp("browser")
    started = time.perf_counter()
    checkpoint, validation = shapes_checkpoint(root / "run")
    print(f"\nshapes model: {time.perf_counter() - started:.0f} s, validation {validation}")
    dataset = next((root / "run" / "data").glob("*/dataset_synthetic.json"))
    entries = [e for e in json.loads(dataset.read_text())["images"] if e["split"] == "test"]
    images = [dataset.parent / e["filepath"] / e["filename"] for e in entries[:3]]
    return {"root": root, "checkpoint": checkpoint, "images": images}


@pytest.fixture(scope="module")
def served(shapes):
    """The page on the loopback address, serving the shapes model."""
    with serving(shapes["root"], "server", "--checkpoint", str(shapes["checkpoint"])) as url:
        yield {**shapes, "url": url}


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
    page = browser.new_page(viewport={"width": 1280, "height": 1600}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    # expect() has its own timeout (5 s): on a loaded 2-core machine a caption can take longer.
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
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


def sidebar_text(page) -> str:
    return page.locator('[data-testid="stSidebar"]').inner_text()


def test_sidebar_says_what_is_loaded(served, browser):
    page = open_page(browser, served["url"])
    try:
        text = sidebar_text(page)
        assert "ViT 96 x 2, trained from scratch" in text
        assert "Transformer decoder 96 x 1 layer" in text
        assert "synthetic shapes: 2,000 images of 64 px" in text
        assert "validation (step 400, 100 images): CIDEr" in text
        assert "network address" not in text  # a loopback page loads anything
    finally:
        page.close()


def download(page, name: str) -> str:
    """Click the sidebar's ``name`` download button; the downloaded file's text."""
    button = page.locator('[data-testid="stDownloadButton"]').filter(has_text=name)
    with page.expect_download() as info:
        button.click()
    return Path(info.value.path()).read_text(encoding="utf-8")


def test_downloads_return_what_the_page_shows(served, browser):
    from playwright.sync_api import expect

    images, checkpoint = served["images"], served["checkpoint"]
    page = open_page(browser, served["url"])
    try:
        page.get_by_text("Beam search").click()
        page.wait_for_selector(IDLE)
        page.set_input_files(UPLOAD_INPUT, [str(p) for p in images[:2]])
        expect(page.locator("h3")).to_have_count(2)
        page.set_input_files(UPLOAD_INPUT, str(images[2]))  # one more: added to the two
        expect(page.locator("h3")).to_have_count(3)
        page.wait_for_selector(IDLE)
        expect(page.get_by_text("3 captions on this page")).to_be_visible()
        shown = page.locator("h3").all_inner_texts()
        scores = [
            float(t.split("·")[0].split()[1])
            for t in page.get_by_text("log-probability").all_inner_texts()
        ]
        page.screenshot(path=str(artifacts_dir() / "browser-downloads.png"), full_page=True)

        record = json.loads(download(page, "JSON"))
        rows = list(csv.DictReader(io.StringIO(download(page, "CSV"))))
    finally:
        page.close()
    assert [c["image"] for c in record["captions"]] == [p.name for p in images]
    assert [c["caption"] for c in record["captions"]] == shown
    assert [round(c["score"], 3) for c in record["captions"]] == scores
    assert record["decoding"]["strategy"] == "beam" and record["decoding"]["num_beams"] == 3
    for image, entry in zip(images, record["captions"], strict=True):
        # The other beams, as the library gives them for this file and decoding.
        best = mlx_caption.caption(image, checkpoint=checkpoint, strategy="beam", num_beams=3)[0]
        assert entry["caption"] == best.text
        assert [o["caption"] for o in entry["others"]] == [a.text for a in best.alternatives]
        assert len(entry["others"]) == 2
    assert [(r["image"], r["rank"], r["caption"]) for r in rows] == [
        (c["image"], str(rank), text)
        for c in record["captions"]
        for rank, text in enumerate([c["caption"], *(o["caption"] for o in c["others"])], 1)
    ]


def test_drawn_red_circle_is_a_red_circle(served, browser):
    """The Draw tab draws on the model's background; a filled red circle the size of the
    training images' large shapes, drawn with the circle tool, is read as one."""
    from playwright.sync_api import expect

    look = mlx_caption.load_captioner(served["checkpoint"])[0].config.image_look
    page = open_page(browser, served["url"])
    try:
        page.get_by_role("tab", name="Draw").click()
        panel = page.get_by_role("tabpanel", name="Draw")
        canvas = page.locator("canvas.upper-canvas")
        expect(canvas).to_be_visible()
        page.wait_for_selector(IDLE)
        # The canvas shows the training images' background, not white.
        pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))
        shown = pixels.reshape(-1, 3).mean(axis=0)
        assert np.abs(shown - np.array(look.background)).max() < 6, (shown, look)

        panel.locator('[data-testid="stSelectbox"]').first.click()
        page.get_by_role("option", name="circle").click()
        # The rerun has begun once the shape tools' hint shows; only then does IDLE mean the
        # canvas has its circle tool. A drag before that starts a free-hand stroke that the
        # tool change cuts off: nothing drawn, nothing captioned (4 runs in 10 here).
        expect(panel.get_by_text("Drag out the shape")).to_be_visible()
        page.wait_for_selector(IDLE)
        box = canvas.bounding_box()
        large = dict(look.object_sizes)["large"] * box["width"]
        x, y = box["x"] + box["width"] / 2 - large / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        for step in range(1, 11):  # the circle tool's drag is the diameter
            page.mouse.move(x + large * step / 10, y)
        page.mouse.up()
        pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))
        red = (np.abs(pixels.astype(int) - (225, 30, 30)).max(axis=-1) < 40).sum()
        assert red > 0.8 * np.pi * (large / 2) ** 2, f"the drawn circle covers {red} px"
        caption = panel.locator("h3")
        expect(caption).to_have_count(1)
        page.wait_for_selector(IDLE)
        page.screenshot(path=str(artifacts_dir() / "browser-drawing.png"), full_page=True)
        words = caption.inner_text().split()
        assert "red" in words and "circle" in words, words
    finally:
        page.close()


@pytest.fixture(scope="module")
def served_on_network(shapes):
    """The page on every interface (a network address): root holds a copy of the model."""
    root = shapes["root"] / "offered"
    shutil.copytree(shapes["checkpoint"], root / "runs" / "shapes")
    args = ["--host", "0.0.0.0", "--checkpoints-root", str(root)]
    with serving(shapes["root"], "network-server", *args) as url:
        yield {**shapes, "url": url, "offered": root}


def test_network_page_loads_only_what_is_offered(served_on_network, browser):
    from playwright.sync_api import expect

    served = served_on_network
    page = open_page(browser, served["url"])
    try:
        assert "loads only the served checkpoint, folders under its checkpoints root" in (
            sidebar_text(page)
        )
        page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').click()
        page.get_by_role("option", name="Another folder...").click()
        box = page.get_by_label("Folder under the root, or zoo name")
        refusals = []
        # A real checkpoint outside the root, and a path that does not exist.
        for typed in (str(served["checkpoint"]), str(served["root"] / "no-such-folder")):
            box.fill(typed)
            box.press("Enter")
            error = page.locator('[data-testid="stAlertContentError"]')
            expect(error).to_contain_text(typed)
            refusals.append(error.inner_text().replace(typed, "PATH"))
        page.screenshot(path=str(artifacts_dir() / "browser-refused.png"), full_page=True)
        assert refusals[0] == refusals[1]  # nothing tells the two apart
        assert "not a checkpoint this page may load" in refusals[0]

        box.fill("runs/shapes")  # under the root: it loads
        box.press("Enter")
        page.wait_for_selector(IDLE)
        expect(page.locator('[data-testid="stAlertContentError"]')).to_have_count(0)
        expect(page.get_by_role("tab", name="Draw")).to_be_visible()
        assert "ViT 96 x 2, trained from scratch" in sidebar_text(page)
    finally:
        page.close()

"""`lbdt serve` in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright through
`executable_path`; no browser download) uploads a clip, types a sentence, runs it and finds the overlay video
playing; an upload over the limit and an unreadable file each show one message on the page. The app runs with
the default limits (what `lbdt serve` shows), so the screenshot is the page a user gets. Every request
the page makes must go to 127.0.0.1 (others are aborted and fail the test).

With LBDT_SAVE_SCREENSHOT=1 the screenshot of the finished page is also written to docs/images/serve.png."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from lbdt.data.synth import make_clip
from lbdt.visualize import VideoWriter
from serving import running_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "serve.png"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                       reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    yield from running_app(tmp_path_factory)  # the default limits


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    outside: list[str] = []

    def local_only(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1100, "height": 820})
        context.route("**/*", local_only)
        yield context
        context.close()
    assert outside == []  # the page never reached beyond 127.0.0.1


def open_page(browser, app):
    page = browser.new_page()
    page.goto(app.url)
    page.wait_for_selector("#video-in input[type=file]", state="attached")
    return page


def test_browser_segments_a_clip_and_plays_the_result(browser, app, tmp_path):
    drawn = make_clip(8, frames=16, size=(96, 128), speed=1.2)  # its purple and green shapes show the red and blue tints
    clip = tmp_path / "shapes.mp4"
    with VideoWriter(clip, fps=8) as writer:  # H.264 at crf 23: a few tens of KB, under the 0.2 MB limit
        for frame in drawn.frames:
            writer.write(frame.repeat(2, 0).repeat(2, 1))
    sentence = f"{drawn.objects[0].sentence}\n{drawn.objects[3].sentence}"  # a motion and an appearance sentence
    page = open_page(browser, app)
    assert "demonstration model trained only" in page.locator("#model-warning").inner_text()
    assert page.locator("#runtime").inner_text() == "Runs on cpu in fp32 (requested)."
    assert page.locator("#video-in").inner_text().startswith("Video (mp4, webm, mov, gif; at most 50 MB, 60 s, 1800")
    assert page.locator("#sentences textarea").get_attribute("placeholder").startswith("Type what to segment, e.g. “")
    assert page.locator("#area").count() == 0 and page.locator("#score").count() == 0  # no empty plots before a run
    label_area = page.evaluate("() => Array.from(document.querySelectorAll('#overlay label')).map(l => {"
                               " const r = l.getBoundingClientRect(); return r.width * r.height; })")
    assert all(a <= 1 for a in label_area)  # the "Overlay" label (kept for screen readers) does not hide the caption
    page.locator("#video-in input[type=file]").set_input_files(str(clip))
    page.locator("#video-in").get_by_text("shapes").first.wait_for()
    page.locator("#sentences textarea").fill("the bike riding left")  # the notice comes as it is typed
    page.get_by_text("the model does not know 'bike', 'riding'").wait_for(timeout=10_000)
    page.locator("#sentences textarea").fill(sentence)
    page.wait_for_function("() => !document.querySelector('#words').innerText.includes('bike')", timeout=10_000)
    page.locator("#run").click()
    page.wait_for_function("() => { const v = document.querySelector('#overlay video');"
                           " return v && v.readyState >= 2 && v.videoWidth > 0; }", timeout=60_000)
    if page.evaluate("() => document.querySelector('#overlay video').paused"):
        page.evaluate("() => document.querySelector('#overlay video').play()")
    first = page.evaluate("() => document.querySelector('#overlay video').currentTime")
    time.sleep(0.8)
    video = page.evaluate("() => { const v = document.querySelector('#overlay video');"
                          " return {t: v.currentTime, paused: v.paused, w: v.videoWidth, h: v.videoHeight}; }")
    assert not video["paused"] and video["t"] != first  # playing: the clock moves
    assert (video["w"], video["h"]) == (256, 192)
    assert "16 frames at 256×192, 8 fps, on cpu in fp32 (requested)." in page.locator("#notes").inner_text()
    page.locator("#area").wait_for()  # the plots appear with the result
    page.locator("#score").wait_for()
    assert "masks.zip" in page.locator("#masks").inner_text().replace("\n", "")  # the name is split in two spans
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LBDT_SAVE_SCREENSHOT") == "1":
        from PIL import Image

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)  # a 128-colour palette keeps the committed PNG small
        Image.open(shot).convert("RGB").quantize(128).save(SCREENSHOT, optimize=True)
    page.get_by_text("Model", exact=True).click()  # the model card's accordion
    card = page.locator("#model-card").inner_text()
    assert "synthetic-tiny" in card and "cpu" in card and "fp32" in card
    page.close()


def error_text(page) -> str:
    """The text of the one error toast Gradio shows on the page."""
    page.locator(".toast-body").first.wait_for(timeout=30_000)
    assert page.locator(".toast-body").count() == 1
    return page.locator(".toast-body").inner_text()


def test_browser_shows_upload_over_the_limit(browser, app, tmp_path):
    big = tmp_path / "big.mp4"
    with big.open("wb") as f:  # over the default 50 MB
        f.truncate(51 * 1024 * 1024)
    page = open_page(browser, app)
    page.locator("#video-in input[type=file]").set_input_files(str(big))
    text = error_text(page)
    assert "exceed the maximum allowed size" in text and "big.mp4" in text
    page.close()


def test_browser_shows_unreadable_file(browser, app, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 10)
    page = open_page(browser, app)
    page.locator("#video-in input[type=file]").set_input_files(str(broken))
    page.locator("#video-in").get_by_text("broken").first.wait_for()
    page.locator("#sentences textarea").fill("the red circle")
    page.locator("#run").click()
    assert "broken.mp4: cannot read video (" in error_text(page)
    page.close()


def test_browser_runs_the_example_after_a_refusal(browser, app):
    page = open_page(browser, app)
    page.locator("#sentences textarea").fill("the red circle")
    page.locator("#run").click()  # no video yet
    assert error_text(page).splitlines()[-1] == "no video: upload one (mp4, webm, mov, gif) or pick the example below"
    page.get_by_text("synthetic-example.mp4").first.click()  # the bundled example fills the video and sentences
    page.wait_for_function("() => document.querySelector('#sentences textarea').value.includes('\\n')")
    page.locator("#run").click()
    page.wait_for_function("() => { const v = document.querySelector('#overlay video');"
                           " return v && v.readyState >= 2 && v.videoWidth > 0; }", timeout=60_000)
    assert page.locator("#notes").inner_text().startswith("20 frames at 256×192, 8 fps, on cpu in fp32")
    page.close()

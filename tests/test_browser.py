"""document.html in a real browser: images load, notes show, hostile model text stays inert.

The assembler writes the page; headless Chromium opens it from a file:// URL.
The page is checked twice: as written (its Content-Security-Policy in force) and
with the browser told to ignore that policy, so that the sanitizer alone must
keep every payload inert. A payload that survived sanitizing but was stopped by
the policy still fails the first run: Chromium reports the violation as a
console error.

Needs the ``playwright`` Python package (its driver) and a Chromium binary: the
system one (Debian's ``chromium``), one named by ``LLMI_CHROMIUM``, or one that
``playwright install`` downloaded. Without them the tests skip. A screenshot of
each run is saved under the test's tmp_path and, when ``LLMI_TEST_ARTIFACTS`` is
set, copied into that folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.runtime import Runtime
from PIL import Image

from llmi.artifacts import ArtifactStore
from llmi.context import Context
from llmi.nodes.assembler import assemble
from llmi.state import ImageRef, ImageRequest, ImageResult, failed_result

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Each payload sets window.__pwned (or opens a dialog) if it ever runs.
PAYLOADS = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    "[click](javascript:window.__pwned=3)",
    '<iframe src="javascript:window.__pwned=4"></iframe>',
    '<svg onload="window.__pwned=5"><circle/></svg>',
    '<a href="#" onclick="window.__pwned=6">x</a>',
    "<details open ontoggle=alert(7)>",
    "[dlg](javascript:alert(8)) [ent](java&#115;cript:window.__pwned=9) <javascript:alert(10)>",
    '<object data="javascript:window.__pwned=11"></object><embed src="javascript:alert(12)">',
    '<form action="javascript:window.__pwned=13"><button>go</button></form>',
    '<base href="javascript:alert(14)//">'
    '<meta http-equiv="refresh" content="0;url=javascript:alert(15)">',
    '"><img src=x onerror=alert(16)>',
]
HOSTILE_INLINE = " ".join(PAYLOADS)
HOSTILE_TEXT = "\n\n".join(
    [
        "# A guide to <script>window.__pwned=1</script> Kyoto",
        "Intro paragraph. " + HOSTILE_INLINE,
        *PAYLOADS,
        # Inside a code span and a fenced code block: must show as literal text.
        "In a code span: `" + PAYLOADS[0] + " " + PAYLOADS[1] + "` and that is all.",
        "```html\n" + "\n".join(PAYLOADS) + "\n```",
        # Raw HTML blocks, each of the CommonMark kinds.
        "<div>\n" + "\n".join(PAYLOADS) + "\n</div>",
        "<script>\nwindow.__pwned=1\n</script>",
        '<iframe src="javascript:window.__pwned=4"></iframe>',
        '<!-- comment --><svg onload="window.__pwned=5"><circle/></svg>',
        "A safe link stays a link: [docs](https://example.com/docs).",
    ]
)
LINK_TEXT = "[click](javascript:window.__pwned=3)"

# Figure slots: (slot, kind) in document order.
_OK_SLOTS = {0: ("PNG", (160, 120)), 2: ("JPEG", (200, 100)), 4: ("WEBP", (120, 120))}
_FAILED_SLOTS = (1, 3)  # 1: a failed result; 3: a request that never got a result


def _browser_executable() -> str | None:
    named = os.environ.get("LLMI_CHROMIUM")
    if named:
        return named
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright (the browser driver) is not installed"
    )
    executable = _browser_executable()
    with sync_api.sync_playwright() as playwright:
        if executable is None:
            bundled = Path(playwright.chromium.executable_path)
            if not bundled.is_file():
                pytest.skip("no Chromium found (install Debian's chromium or set LLMI_CHROMIUM)")
            executable = str(bundled)
        # A browser that is installed but will not start is a failure, not a skip.
        browser = playwright.chromium.launch(
            executable_path=executable, args=_ARGS, headless=True, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


def _image(store: ArtifactStore, fmt: str, size: tuple[int, int], shade: int) -> ImageRef:
    width, height = size
    img = Image.new("RGB", size)
    img.putdata(
        [(x * 255 // width, y * 255 // height, shade) for y in range(height) for x in range(width)]
    )
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return store.put(buf.getvalue())


def _ok(slot: int, description: str, ref: ImageRef) -> ImageResult:
    return ImageResult(
        slot=slot, source="diffusion", description=description, ok=True, image=ref, error=None,
        tool="diffusion", backend="fake", provenance={}, seconds=0.1, attempt=0,
    )


@pytest.fixture
def document(context: Context) -> Path:
    """document.html written by the real assembler from hostile model text."""
    store = ArtifactStore(context.artifact_dir)
    results: list[ImageResult] = [
        _ok(slot, f"Figure {slot} {PAYLOADS[slot % len(PAYLOADS)]} {HOSTILE_INLINE}",
            _image(store, fmt, size, shade=slot * 50))
        for slot, (fmt, size) in _OK_SLOTS.items()
    ]
    results.append(
        failed_result(1, "search " + PAYLOADS[1], "A photo " + HOSTILE_INLINE,
                      "no images found " + HOSTILE_INLINE, attempt=2)
    )
    state = {
        "prompt": HOSTILE_INLINE,
        "segments": [
            {"kind": "text", "text": HOSTILE_TEXT},
            {"kind": "slot", "slot": 0},
            {"kind": "text", "text": "Between the figures. " + HOSTILE_INLINE},
            {"kind": "slot", "slot": 1},
            {"kind": "slot", "slot": 2},
            {"kind": "text", "text": "`" + PAYLOADS[4] + "` " + LINK_TEXT},
            {"kind": "slot", "slot": 3},
            {"kind": "slot", "slot": 4},
            {"kind": "text", "text": "The end. " + HOSTILE_INLINE},
        ],
        "requests": [
            ImageRequest(slot=3, source="edit", description="A darker " + HOSTILE_INLINE,
                         params={}, depends_on=2, attempt=0),
        ],
        "results": results,
    }
    outputs = assemble(state, Runtime(context=context))["outputs"]
    return Path(outputs["html"])


def _save_screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "browser-artifacts"
    folder.mkdir(exist_ok=True)
    shot = folder / name
    page.screenshot(path=str(shot), full_page=True)
    shared = os.environ.get("LLMI_TEST_ARTIFACTS")
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(shared) / name)
    return shot


# Every element and attribute of the live DOM that could run script or load something.
_DOM_REPORT = """() => {
  const bad = [];
  const dangerous = 'script, iframe, frame, frameset, object, embed, applet, svg, math, form, '
    + 'base, link, input, button, textarea, select, meta[http-equiv="refresh" i], details';
  for (const el of document.querySelectorAll(dangerous)) bad.push('element ' + el.tagName);
  const urlAttrs = new Set(['href', 'src', 'action', 'formaction', 'srcset', 'data', 'poster',
                            'xlink:href', 'background', 'ping', 'cite', 'content']);
  for (const el of document.querySelectorAll('*')) {
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      const value = attr.value.toLowerCase().replace(/[\\s\\u0000-\\u001f]/g, '');
      if (name.startsWith('on')) bad.push(`${el.tagName} has ${name}`);
      if (urlAttrs.has(name) && /(java|vb)script:/.test(value))
        bad.push(`${el.tagName} ${name}=${value}`);
      if (el.tagName === 'IMG' && name === 'src' && !value.startsWith('data:image/'))
        bad.push(`IMG src=${value.slice(0, 40)}`);
      if (el.tagName === 'A' && name === 'href' && !/^(https?|mailto):/.test(value))
        bad.push(`A href=${value}`);
    }
  }
  if (window.frames.length) bad.push(`${window.frames.length} frames`);
  return bad;
}"""

_IMAGES = """() => [...document.images].map(img => ({
  complete: img.complete, naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
  src: img.getAttribute('src').slice(0, 30), alt: img.alt,
}))"""

_SHOWN = """(el) => {
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  return {visibility: style.visibility, display: style.display, opacity: style.opacity,
          width: box.width, height: box.height, text: el.innerText};
}"""


def _assert_shown(locator: Any, what: str) -> None:
    count = locator.count()
    assert count, f"no {what} on the page"
    for i in range(count):
        element = locator.nth(i)
        shown = element.evaluate(_SHOWN)
        assert shown["visibility"] == "visible", (what, i, shown)
        assert shown["display"] != "none" and float(shown["opacity"]) > 0, (what, i, shown)
        assert shown["width"] > 0 and shown["height"] > 0, (what, i, shown)
        box = element.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0, (what, i, box)
        assert element.is_visible(), (what, i)


@pytest.mark.parametrize("csp", ["enforced", "bypassed"])
def test_document_renders_and_hostile_text_stays_inert(
    browser: Any, document: Path, tmp_path: Path, csp: str
) -> None:
    context = browser.new_context(
        bypass_csp=csp == "bypassed", java_script_enabled=True,
        viewport={"width": 1000, "height": 800},
    )
    events: list[str] = []
    # Nothing may leave the machine: record and refuse every network request.
    context.route("http*://**", lambda route: (events.append(f"network {route.request.url}"),
                                               route.abort()))
    # Violations of the page's policy mean a payload survived sanitizing.
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => "
        "(window.__violations = window.__violations || []).push(e.violatedDirective + ' ' + "
        "e.blockedURI));"
    )
    page = context.new_page()
    context.on("page", lambda popup: events.append(f"new page {popup.url}"))
    try:
        url = document.as_uri()
        page.on("dialog", lambda dialog: (events.append(f"dialog {dialog.message}"),
                                          dialog.dismiss()))
        page.on("console", lambda msg: msg.type == "error" and events.append(f"console {msg.text}"))
        page.on("pageerror", lambda exc: events.append(f"page error {exc}"))
        page.on("request", lambda request: request.url in (url,) or request.url.startswith(
            "data:") or events.append(f"request {request.url}"))

        page.goto(url, wait_until="load", timeout=15_000)
        page.wait_for_timeout(200)  # let anything that was going to run, run

        # Nothing ran, nothing was blocked, nothing dangerous is in the DOM.
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("window.__violations || []") == []
        assert events == []
        assert page.evaluate(_DOM_REPORT) == []

        # Every image decoded, at its own size, as a data: URI.
        images = page.evaluate(_IMAGES)
        assert len(images) == len(_OK_SLOTS), images
        for image, (_, (width, height)) in zip(images, _OK_SLOTS.values()):
            assert image["complete"] and image["naturalWidth"] > 0, image
            assert (image["naturalWidth"], image["naturalHeight"]) == (width, height), image
            assert image["src"].startswith("data:image/"), image
            assert image["alt"].startswith("Figure "), image
        _assert_shown(page.locator("figure img"), "image")

        # Captions and failure notes are on screen and say what they should.
        _assert_shown(page.locator("figcaption"), "caption")
        failed = page.locator("figure.failed")
        assert failed.count() == len(_FAILED_SLOTS)
        _assert_shown(failed, "failure note")
        notes = failed.all_inner_texts()
        assert "Image 1 could not be made" in notes[0] and "no images found" in notes[0]
        assert "Image 3 could not be made" in notes[1] and "no result" in notes[1]
        assert failed.first.evaluate("el => getComputedStyle(el).borderStyle") == "dashed"
        captions = page.locator("figcaption").all_inner_texts()
        assert len(captions) == len(_OK_SLOTS) + len(_FAILED_SLOTS)
        assert all(PAYLOADS[0] in caption for caption in captions), captions

        # The payloads are on the page as text, and nowhere as markup.
        figures = "[...document.querySelectorAll('figure')].map(f => f.className)"
        assert page.evaluate(figures) == ["", "failed", "", "failed", ""]
        text = page.inner_text("body")
        for payload in ("<script>window.__pwned=1</script>", '<svg onload="window.__pwned=5">',
                        '<iframe src="javascript:window.__pwned=4"></iframe>'):
            assert payload in text, payload
        code = page.locator("code").all_inner_texts()
        assert any(PAYLOADS[0] in c and PAYLOADS[1] in c for c in code), code
        assert page.title().startswith("A guide to")
        assert page.locator("a").count() >= 1  # the safe link survived, so the check is not empty

        # Clicking where the hostile links were runs nothing and goes nowhere.
        targets = [page.get_by_text(LINK_TEXT, exact=False).first,
                   page.get_by_text("[dlg](javascript:alert(8))", exact=False).first]
        targets += [a for a in page.locator("a").all()
                    if not (a.get_attribute("href") or "").startswith(("http:", "https:"))]
        for target in targets:
            target.click(timeout=5_000, no_wait_after=True)
        page.wait_for_timeout(300)

        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("window.__violations || []") == []
        assert events == []
        assert page.evaluate(_DOM_REPORT) == []
        assert page.url == url and len(context.pages) == 1
        shot = _save_screenshot(page, tmp_path, f"document-csp-{csp}.png")
        with Image.open(shot) as screenshot:
            assert screenshot.width >= 1000 and screenshot.height > 800
    except BaseException:
        with contextlib.suppress(Exception):
            _save_screenshot(page, tmp_path, f"document-csp-{csp}-failed.png")
        raise
    finally:
        context.close()


def test_the_harness_sees_a_payload_that_runs(browser: Any, tmp_path: Path) -> None:
    """Control: the listeners above do catch script that runs, so their silence means something."""
    page_file = tmp_path / "control.html"
    page_file.write_text(
        "<!DOCTYPE html><p>control</p><script>window.__pwned=1; alert('x');</script>"
        '<img src="x" onerror="window.__pwned2=1">'
    )
    context = browser.new_context()
    events: list[str] = []
    try:
        page = context.new_page()
        page.on("dialog", lambda dialog: (events.append("dialog"), dialog.dismiss()))
        page.on("request", lambda request: events.append(request.url))
        page.goto(page_file.as_uri(), wait_until="load", timeout=15_000)
        assert page.evaluate("[window.__pwned, window.__pwned2]") == [1, 1]
        assert "dialog" in events
        assert (tmp_path / "x").as_uri() in events
    finally:
        context.close()

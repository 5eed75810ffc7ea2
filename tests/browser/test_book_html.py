"""The built HTML book as a reader meets it, in headless Chromium.

Needs the book built (``make book-ci`` or ``make book``: ``_build/html``) and Debian's
``chromium`` and ``chromium-driver`` (``make browser-deps`` installs them). ``make test`` runs
this module after building the book and sets ``MEDSEG_REQUIRE_BROWSER=1``, which turns a
missing book or browser into a failure; run alone without it, the module is skipped with the
command that fixes it.

The pages are served by a ``http.server`` on 127.0.0.1 (started and stopped here), as a
reader's browser would load them; nothing reaches the internet. Screenshots of every chapter
page are saved to ``_build/screenshots/`` as test artefacts.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
REQUIRED = os.environ.get("MEDSEG_REQUIRE_BROWSER") == "1"


def _chapters():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            pages += [chapter["file"]] + [section["file"] for section in chapter.get("sections", [])]
    return pages


CHAPTERS = _chapters()


def _require(condition, message):
    if condition:
        return
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


def _executable(*names):
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def site():
    """The built book served on 127.0.0.1 at a free port, stopped after the module."""
    _require((HTML / "index.html").is_file(), f"no built book at {HTML}: run `make book-ci` (or `make book`) first")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(site):
    chromium = _executable("chromium", "chromium-browser", "/usr/bin/chromium", "google-chrome", "google-chrome-stable")
    driver_path = _executable("chromedriver", "/usr/bin/chromedriver")
    _require(chromium and driver_path, "headless Chromium and chromedriver are not installed: run `make browser-deps` "
             "(Debian/Ubuntu: apt-get install chromium chromium-driver)")
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1600", "--hide-scrollbars", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _load(driver, url):
    driver.get(url)
    deadline = time.monotonic() + 30
    while driver.execute_script("return document.readyState") != "complete":
        assert time.monotonic() < deadline, f"{url} did not finish loading in 30 s"
        time.sleep(0.1)


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_page_shows_its_figures(browser, site, page):
    url = urljoin(site, f"{page}.html")
    _load(browser, url)
    title = browser.execute_script("const h = document.querySelector('article h1, main h1'); return h && h.textContent")
    assert title and title.strip(), f"{url} has no heading"
    # every image, including the figures a notebook drew, has arrived and decoded
    deadline = time.monotonic() + 30
    while True:
        images = browser.execute_script(
            "return Array.from(document.querySelectorAll('article img, main img')).map("
            "i => [i.currentSrc || i.src, i.complete, i.naturalWidth, i.alt || ''])")
        pending = [src for src, complete, _, _ in images if not complete]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    broken = [src for src, _, width, _ in images if width == 0]
    assert not broken, f"{url}: images that did not load: {broken}"
    browser.save_screenshot(str(SHOTS / f"{Path(page).name}.png"))
    figures = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure')).filter(f => f.querySelector('img')).map("
        "f => [f.querySelector('img').alt, (f.querySelector('figcaption') || {}).textContent || ''])")
    for alt, caption in figures:  # a notebook figure: alt text for screen readers, a caption for everyone
        assert alt.strip() and caption.strip(), f"{url}: a figure without alt text or caption ({alt!r}, {caption!r})"
    if figures:  # and one screenshot that shows a figure
        browser.execute_script("document.querySelector('figure img').scrollIntoView({block: 'center'})")
        time.sleep(0.2)
        browser.save_screenshot(str(SHOTS / f"{Path(page).name}_figure.png"))
    if Path(page).name[:2].isdigit():  # a chapter: its exercises, folded solutions and footer
        heights = browser.execute_script(
            "return Array.from(document.querySelectorAll('.solution.dropdown')).map("
            "e => e.querySelector('section').getBoundingClientRect().height)")
        exercises = browser.execute_script("return document.querySelectorAll('.exercise').length")
        assert exercises >= 3 and len(heights) == exercises, f"{url}: {exercises} exercises, {len(heights)} solutions"
        assert max(heights) == 0, f"{url}: a solution is shown before the reader opens it"
        browser.execute_script("document.querySelector('.solution.dropdown button').click()")
        time.sleep(0.3)
        opened = browser.execute_script(
            "return document.querySelector('.solution.dropdown section').getBoundingClientRect().height")
        assert opened > 0, f"{url}: the first solution did not open when its button was clicked"
        footer = browser.execute_script("return document.querySelector('article, main').innerText")
        assert "Reproducibility:" in footer and "chapter wall time" in footer, f"{url}: no reproducibility footer"


def test_chapters_with_figures_show_them(browser, site):
    """The notebooks' figures are in the pages (a build that dropped outputs would pass the
    test above with zero images)."""
    counts = {}
    for page in CHAPTERS:
        _load(browser, urljoin(site, f"{page}.html"))
        counts[page] = browser.execute_script("return document.querySelectorAll('article img, main img').length")
    assert counts["book/08_model_and_training"] > 0 and counts["book/10_case_study_brain_mri"] > 0, counts
    assert sum(counts.values()) >= 30, counts


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if tag in ("a", "link", "img", "script") and attrs.get(key):
                self.hrefs.append(attrs[key])


@functools.lru_cache(maxsize=None)
def _parse(path):
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def test_no_internal_link_is_broken():
    """Every relative link and resource of every page points at a file of the build, and
    every #fragment at an element of the page it names."""
    _require((HTML / "index.html").is_file(), f"no built book at {HTML}: run `make book-ci` (or `make book`) first")
    broken = []
    # the book's pages; _static/ holds the theme's Jinja templates, not pages
    pages = sorted(p for p in HTML.rglob("*.html") if not p.relative_to(HTML).parts[0].startswith("_"))
    for page in pages:
        for href in _parse(page).hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(HTML)} -> {href}")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _parse(target).ids:
                broken.append(f"{page.relative_to(HTML)} -> {href} (no such anchor)")
    assert len(pages) >= len(CHAPTERS)
    assert not broken, "broken internal links:\n" + "\n".join(broken[:50])


def test_search_finds_a_term_from_a_chapter(browser, site):
    _load(browser, urljoin(site, "search.html?q=Hounsfield"))
    deadline = time.monotonic() + 30
    hits = []
    while time.monotonic() < deadline:
        hits = browser.execute_script(
            "return Array.from(document.querySelectorAll('#search-results a')).map(a => a.getAttribute('href'))")
        if hits:
            break
        time.sleep(0.2)
    browser.save_screenshot(str(SHOTS / "search.png"))
    assert any("book/" in hit for hit in hits), f"searching 'Hounsfield' found no chapter: {hits}"


def test_maths_is_typeset_without_the_internet(browser, site):
    """MathJax comes from the book's own _static/ (sphinx-mathjax-offline), not a CDN, so the
    formulas read as formulas offline: on every page with TeX, each formula becomes a
    MathJax element."""
    with_maths = [page for page in CHAPTERS + ["book/glossary"]
                  if 'class="math' in (HTML / f"{page}.html").read_text(encoding="utf-8")]
    assert len(with_maths) >= 5, f"maths found on only {with_maths}"
    for page in with_maths:
        url = urljoin(site, f"{page}.html")
        _load(browser, url)
        sources = browser.execute_script(
            "return Array.from(document.querySelectorAll('script[src*=\"mathjax\" i]')).map(s => s.src)")
        assert sources and all(src.startswith(site) for src in sources), f"{url}: MathJax not served by the book: {sources}"
        deadline = time.monotonic() + 30
        while True:
            total, typeset = browser.execute_script(
                "const m = Array.from(document.querySelectorAll('.math'));"
                "return [m.length, m.filter(e => e.querySelector('mjx-container')).length]")
            if (total and typeset == total) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total and typeset == total, f"{url}: {total - typeset} of {total} formulas still raw TeX after 30 s"
        if page == "book/05_loss_functions":  # the corrected BCE formula, as a reader sees it
            browser.execute_script("document.querySelector('.math').scrollIntoView({block: 'center'})")
            time.sleep(0.3)
            browser.save_screenshot(str(SHOTS / "05_loss_functions_maths.png"))

"""Headless Debian Chromium driven by Selenium: the browser of the page tests (``tanet serve``'s
page, the documentation site) and of ``scripts/serve_screenshot.py``."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from typing import Any, Iterator

__all__ = ["missing", "headless_chrome", "console_errors"]

ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage")


def missing() -> str | None:
    """Why the browser cannot run here, or None when it can."""
    absent = [b for b in ("chromium", "chromedriver") if not shutil.which(b)]
    if absent:
        return (f"{' and '.join(absent)} not installed (Debian: apt-get install chromium "
                "chromium-driver; `make test` does it when run as root)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[dev]')"
    return None


@contextlib.contextmanager
def headless_chrome(width: int, height: int, *extra: str) -> Iterator[Any]:
    """A Selenium driver of headless Chromium with a window of ``width`` x ``height`` and a
    profile folder of its own; both are gone when the block ends. ``extra``: more switches."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="tanet-chromium-")
    for arg in (*ARGS, *extra, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[dict]:
    """The page's console errors so far (the browser log's SEVERE entries)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]

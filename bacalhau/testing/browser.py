"""A headless Chromium for tests of the dashboard (Debian's ``chromium`` and
``chromium-driver``, driven by selenium).

:func:`chromium` gives a driver with a fresh profile, or skips the test with the reason
when the browser, its driver or selenium is missing; with ``BACALHAU_REQUIRE_BROWSER=1``
(``scripts/test.sh`` sets it on CI) it fails instead. Importing this module needs
neither pytest nor selenium.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["CHROMIUM_FLAGS", "chromium", "find_chromium"]

REQUIRE_ENV = "BACALHAU_REQUIRE_BROWSER"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> tuple[str, str] | str:
    """``(browser, driver)`` paths, or the reason they cannot be had."""
    browser = os.environ.get("BACALHAU_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
    )
    driver = os.environ.get("BACALHAU_CHROMEDRIVER") or shutil.which("chromedriver")
    if browser is None or driver is None:
        return "no chromium and chromedriver (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return browser, driver


def _unavailable(reason: str) -> None:
    import pytest

    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


@contextmanager
def chromium(*, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile, quit (and its profile
    removed) on exit."""
    found = find_chromium()
    if isinstance(found, str):
        _unavailable(found)
        raise AssertionError("unreachable")
    browser, driver_path = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="bacalhau-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as exc:
        shutil.rmtree(profile, ignore_errors=True)
        _unavailable(f"chromium did not start: {exc}")
        raise
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

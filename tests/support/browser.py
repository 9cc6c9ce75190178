"""A real headless browser for the page tests: Debian's Chromium, driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The system Chromium binary (CHROMIUM_PATH wins), or None."""
    if os.environ.get("CHROMIUM_PATH"):
        return os.environ["CHROMIUM_PATH"]
    return next((p for name in CHROMIUM_CANDIDATES if (p := shutil.which(name))), None)


def require_chromium() -> str:
    """Chromium's path; in CI a missing browser fails the test, on a laptop it skips with how to install it."""
    path = chromium_path()
    if path is None:
        message = (
            "no Chromium found: install it (Debian/Ubuntu: `sudo apt-get install chromium`) or set "
            "CHROMIUM_PATH to a Chromium/Chrome binary to run the browser tests"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def launch(playwright):  # noqa: ANN001, ANN201 - playwright's own types
    """A headless Chromium from the system packages (--no-sandbox: CI runs as root)."""
    return playwright.chromium.launch(executable_path=require_chromium(), headless=True, args=["--no-sandbox"])

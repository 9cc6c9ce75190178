"""The lessons' links to ../README.md and ../data/ open in JupyterLab started as `make lab` starts it (real Chromium).

tests/test_links.py checks that those files exist on disk; this checks what the server serves and what a learner
sees. JupyterLab is started with scripts/lab.py's own command (the one `make lab` runs) on 127.0.0.1, a free port and
a token, and is stopped by its handle. No cell is run. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.lab import running_lab

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"
_spec = importlib.util.spec_from_file_location("lab", ROOT / "scripts" / "lab.py")
assert _spec and _spec.loader
lab_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab_script)


def markdown_links(path: Path) -> list[str]:
    """The link targets in a notebook's markdown cells."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return re.findall(r"\]\(\s*<?([^)\s>]+)>?\s*\)", text)


def lesson_with_links() -> Path:
    """The first lesson (in order, from 00) whose markdown links both ../README.md and a file under ../data/."""
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        links = markdown_links(path)
        if any(t.split("#")[0] == "../README.md" for t in links) and any(t.startswith("../data/") for t in links):
            return path
    pytest.fail("no lesson links both ../README.md and ../data/: the test has nothing to click")


def first_heading(path: Path) -> str:
    """The text of a Markdown file's first H1."""
    return next(line[2:].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# "))


@pytest.fixture
def repo_lab(tmp_path):
    """JupyterLab started with `make lab`'s command (scripts/lab.py) from the repository root: (base URL, token)."""
    port, token = free_port(), secrets.token_hex(16)
    extra = [
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--FileCheckpoints.checkpoint_dir={tmp_path / 'checkpoints'}",  # opening a file leaves nothing in the repo
    ]
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),  # a fresh layout, not a saved one
    }
    log_path = tmp_path / "lab.log"
    with running_lab(
        lab_script.lab_command(extra), cwd=ROOT, env=env, port=port, token=token, log_path=log_path
    ) as url:
        yield url, token


def accept_kernel_dialog(page) -> None:  # noqa: ANN001 - playwright's Page
    """Click "Select" if JupyterLab asks which kernel to start (the notebook's own, python3)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    select = page.get_by_role("button", name="Select", exact=True)
    try:
        select.wait_for(timeout=5_000)
        select.click()
    except PlaywrightTimeout:
        pass


def open_link(page, href_part: str, heading: str) -> None:  # noqa: ANN001
    """Click the first rendered-markdown link whose resolved URL holds href_part; the file must open with heading."""
    link = page.locator(f".jp-Notebook .jp-RenderedMarkdown a[href*='{href_part}']").first
    link.click()
    page.get_by_role("heading", name=heading).first.wait_for(timeout=30_000)
    assert page.locator(".jp-Dialog").count() == 0, page.locator(".jp-Dialog").all_inner_texts()
    assert page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").inner_text().strip().endswith(".md")


@pytest.mark.slow
def test_lesson_links_to_readme_and_data_open_in_jupyterlab(repo_lab, browser):
    url, token = repo_lab
    lesson = lesson_with_links()
    for path in ("README.md", "data/README.md", "notebooks/00_setup-check.ipynb"):
        with urllib.request.urlopen(f"{url}/api/contents/{path}?content=0&token={token}", timeout=10) as resp:
            assert resp.status == 200, f"the server does not serve {path}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        # the first page is still lesson 00, and the file browser shows the repository (notebooks/ inside it)
        page.goto(f"{url}/?token={token}")
        page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
        accept_kernel_dialog(page)
        assert page.url.split("?")[0].endswith("/lab/tree/notebooks/00_setup-check.ipynb"), page.url
        current = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
        assert current.inner_text().strip() == "00_setup-check.ipynb"
        assert "notebooks" in page.locator(".jp-BreadCrumbs").inner_text()
        page.screenshot(path=ARTIFACTS / "lab-links-0-lesson00.png")

        # a lesson with both links, opened from the file browser as a learner does
        page.locator(".jp-DirListing-item", has_text=lesson.name).first.dblclick()
        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current", has_text=lesson.name).wait_for(
            timeout=30_000
        )
        accept_kernel_dialog(page)
        open_link(page, "/files/README.md", first_heading(ROOT / "README.md"))
        page.screenshot(path=ARTIFACTS / "lab-links-1-readme.png")

        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=lesson.name).first.click()
        open_link(page, "/files/data/", first_heading(ROOT / "data" / "README.md"))
        page.screenshot(path=ARTIFACTS / "lab-links-2-data.png")
    except BaseException:
        page.screenshot(path=ARTIFACTS / "lab-links-failure.png")
        raise
    finally:
        page.close()

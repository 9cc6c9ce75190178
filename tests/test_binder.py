"""Binder: environment.yml and postBuild follow repo2docker's rules, and their pip part and postBuild install a working
workshop in a fresh venv (conda itself is not on this machine: its part, python and the compilers, is not run here).

repo2docker's rules, as its conda build pack and documentation state them: an environment.yml whose pip section names
local files (`-r requirements/...`) is installed after the whole repository is copied in (no pre-assembly), from the
repository's root; postBuild is an executable file run once after the environment, as the notebook user, and a shell
script's first line is its shebang; a `start` file, if any, ends by running its arguments (`exec "$@"`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENT = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
CULLING = json.loads((ROOT / "jupyter-config" / "jupyter_server_config.json").read_text())["MappingKernelManager"]


def pip_section() -> list[str]:
    """The lines of environment.yml's pip section."""
    return next(d["pip"] for d in ENVIRONMENT["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_environment_yml_pins_python_and_installs_the_locked_requirements_with_pip() -> None:
    assert "python=3.11" in ENVIRONMENT["dependencies"]
    lines = pip_section()
    assert "-r requirements/base.txt" in lines and "-r requirements/offline.txt" in lines
    for line in lines:
        if line.startswith("-r "):
            assert (ROOT / line.split(" ", 1)[1]).is_file(), f"{line}: no such file in the repository"


def test_postbuild_is_an_executable_bash_script_that_stops_on_the_first_error() -> None:
    post_build = ROOT / "postBuild"
    text = post_build.read_text(encoding="utf-8")
    assert os.access(post_build, os.X_OK), "repo2docker runs postBuild only when it is executable (git: mode 100755)"
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    mode = subprocess.run(["git", "ls-files", "-s", "postBuild"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not mode or mode.startswith("100755"), f"postBuild is committed without its executable bit: {mode}"


def test_a_start_file_if_any_ends_by_running_its_arguments() -> None:
    start = ROOT / "start"
    if start.exists():
        assert start.read_text(encoding="utf-8").rstrip().endswith('exec "$@"')


def test_idle_kernels_are_culled_by_the_workshops_jupyter_configuration() -> None:
    assert CULLING["cull_idle_timeout"] > 0 and CULLING["cull_connected"] is True and CULLING["cull_busy"] is False
    assert "jupyter-config/jupyter_server_config.json" in (ROOT / "postBuild").read_text(encoding="utf-8")
    assert "jupyter-config/jupyter_server_config.json" in (ROOT / "Makefile").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.timeout(3600)  # some 200 packages into a fresh venv: 15 minutes and more on a loaded machine
def test_the_pip_part_of_environment_yml_and_postbuild_install_a_working_workshop(tmp_path: Path) -> None:
    venv = tmp_path / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, pip_env = venv / "bin" / "python", {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    pip_env.pop("VIRTUAL_ENV", None)
    requirements = tmp_path / "environment-pip.txt"  # what conda hands to pip, with paths from the repository root
    requirements.write_text("\n".join(line.replace("-r ", f"-r {ROOT}/", 1) for line in pip_section()) + "\n")
    # --no-compile: no .pyc files written at install time (they are made on first import): the same packages, faster
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
    done = subprocess.run([*install, "-r", str(requirements)], cwd=ROOT, env=pip_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(["bash", "postBuild"], cwd=ROOT, env=pip_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    check = (
        "import helpers.setup, infra.standin.launcher as l, jupyterlab, jupyter_server_proxy\n"
        "from jupyter_server.serverapp import ServerApp\n"
        "app = ServerApp(); app.load_config_file()\n"
        "print(json.dumps({'missing': l.missing_packages(), 'culling': dict(app.config.MappingKernelManager)}))"
    )
    out = subprocess.run(
        [str(python), "-c", "import json\n" + check], cwd=tmp_path, env=pip_env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"missing": [], "culling": CULLING}
    page_config = venv / "etc" / "jupyter" / "labconfig" / "page_config.json"
    assert "@jupyterlab/apputils-extension:announcements" in page_config.read_text()


def test_the_readme_has_a_binder_launch_link_that_opens_lesson_00() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    link = re.search(r"\(https://mybinder\.org/v2/gh/([^/]+/[^/]+)/HEAD\?urlpath=lab/tree/([^)\s]+)\)", readme)
    assert link, "the README's Binder badge links a launch of JupyterLab"
    assert (ROOT / link[2]).is_file(), f"the launch opens {link[2]}, which does not exist"
    if link[1] == "OWNER/REPO":  # the placeholder until the repository's public path is known
        assert "replace OWNER/REPO" in readme

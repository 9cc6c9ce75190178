"""JupyterHub for a workshop room: one shared checkout and venv, each attendee with their own stand-in and state.

Copy this file next to your hub and start it with `jupyterhub -f jupyterhub_config.py` (see docs/instructors.md).
The hub test (tests/test_hub.py) starts a real JupyterHub with this very file. Settings, all optional:

    WORKSHOP_REPO              the workshop's checkout, installed with `make install-offline` (default: this one)
    WORKSHOP_HUB_HOMES         where each attendee's folder is made (default: /srv/workshop-homes)
    WORKSHOP_HUB_PORT_BASE     attendee number N gets the stand-in port BASE + N (default: 12000)
    WORKSHOP_HUB_BIND_URL      the address attendees open (default: http://127.0.0.1:8000)
    WORKSHOP_HUB_API_PORT      the hub's own port (default: 8081); WORKSHOP_HUB_PROXY_API_PORT the proxy's (8001)
    WORKSHOP_HUB_DUMMY_PASSWORD  a shared password for DummyAuthenticator (default: PAM, the machine's own users)
    OLLAMA_HOST                one backend for the whole room (docs/instructors.md); unset: a stand-in each

Each attendee gets, through the spawner's environment, a port and a state folder of their own (WORKSHOP_STAND_IN_PORT,
WORKSHOP_STATE_DIR: the stand-in's pid file and log, the lessons' SQLite history), and a copy of the lessons in their
folder: two attendees never share a stand-in, a pid file, a history database or a notebook file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

c = get_config()  # type: ignore[name-defined]  # noqa: F821 (JupyterHub defines it when it reads this file)

REPO = Path(os.environ.get("WORKSHOP_REPO") or Path(__file__).resolve().parents[2])
HOMES = Path(os.environ.get("WORKSHOP_HUB_HOMES") or "/srv/workshop-homes")
PORT_BASE = int(os.environ.get("WORKSHOP_HUB_PORT_BASE") or 12000)
VENV_BIN = REPO / ".venv" / "bin"


def home_of(spawner) -> Path:
    """The attendee's own folder (their copy of the lessons, their state)."""
    return HOMES / spawner.user.name


def copy_lessons(spawner) -> None:
    """Before a server starts: make the attendee's folder and copy the lessons into it once (their edits are kept)."""
    home = home_of(spawner)
    (home / ".workshop").mkdir(parents=True, exist_ok=True)
    if not (home / "notebooks").exists():
        shutil.copytree(REPO / "notebooks", home / "notebooks")


# The hub and its proxy (configurable-http-proxy from npm: `make hub-proxy` installs it in infra/hub/node_modules).
c.JupyterHub.bind_url = os.environ.get("WORKSHOP_HUB_BIND_URL") or "http://127.0.0.1:8000"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{os.environ.get('WORKSHOP_HUB_API_PORT') or 8081}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('WORKSHOP_HUB_PROXY_API_PORT') or 8001}"
c.ConfigurableHTTPProxy.command = [str(REPO / "infra" / "hub" / "node_modules" / ".bin" / "configurable-http-proxy")]

# Who may log in. DummyAuthenticator (one shared password) suits a room of short-lived accounts; PAM uses real users.
if os.environ.get("WORKSHOP_HUB_DUMMY_PASSWORD"):
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = os.environ["WORKSHOP_HUB_DUMMY_PASSWORD"]
c.Authenticator.allow_all = True  # everyone the authenticator accepts; list names in c.Authenticator.allowed_users

# Each attendee's JupyterLab is a local process running the workshop's venv. SimpleLocalProcessSpawner runs them all as
# the hub's own user; with PAM and real users use "localprocess" (LocalProcessSpawner) instead.
c.JupyterHub.spawner_class = "simple"
c.Spawner.cmd = [str(VENV_BIN / "jupyterhub-singleuser")]
c.Spawner.ip = "127.0.0.1"
c.Spawner.pre_spawn_hook = copy_lessons
c.SimpleLocalProcessSpawner.home_dir_template = str(HOMES / "{username}")
c.Spawner.notebook_dir = str(HOMES / "{username}")
c.Spawner.default_url = "/lab/tree/notebooks/00_setup-check.ipynb"
if os.getuid() == 0:  # in a container the hub runs as root: the single-user servers then need --allow-root
    c.Spawner.args = ["--allow-root"]
c.Spawner.environment = {
    "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    "WORKSHOP_STAND_IN_PORT": lambda spawner: str(PORT_BASE + spawner.user.id),
    "WORKSHOP_STATE_DIR": lambda spawner: str(home_of(spawner) / ".workshop"),
    # the hub's own settings that attendees share, when set: one backend for the room, the stand-in forced, fast mode
    **{name: os.environ[name] for name in ("OLLAMA_HOST", "WORKSHOP_OFFLINE", "WORKSHOP_FAST") if os.environ.get(name)},
}
c.Spawner.env_keep = ["LANG", "LC_ALL", "TZ"]
c.Spawner.start_timeout = 120  # a loaded machine starts a server slowly
c.Spawner.http_timeout = 120

"""What the environment asks of the stand-in: read here, and nowhere else in infra/standin.

Standard library only: the launcher and the command line use it without loading any server code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 11435
CHAT_NAME = "smollm2:135m"  # the name the stand-in serves SmolLM2-135M-Instruct under
EMBED_NAME = "all-minilm:latest"  # all-MiniLM-L6-v2, 384-d
E5_NAME = "multilingual-e5-small:latest"  # multilingual-e5-small (4-bit), 384-d, 100 languages; loaded when asked
PORT_VARIABLE = "WORKSHOP_STAND_IN_PORT"
NO_MODELS_VARIABLE = "WORKSHOP_NO_REAL_MODELS"  # set by the fast test tier: loading a real model is then an error


class SettingsError(ValueError):
    """A setting the stand-in cannot use; the message names the variable and what to set it to."""


@dataclass(frozen=True)
class StandInSettings:
    """The stand-in's settings: its port, its state folder (pid file, log), and which chat model it serves."""

    stand_in_port: int = DEFAULT_PORT  # WORKSHOP_STAND_IN_PORT
    state_dir: Path = REPO_ROOT / ".workshop"  # WORKSHOP_STATE_DIR
    chat_gguf: str | None = None  # WORKSHOP_CHAT_GGUF: serve this GGUF file instead of SmolLM2
    chat_name: str | None = None  # WORKSHOP_CHAT_NAME: the name to serve that file under


def parse_port(value: str | None) -> int:
    """WORKSHOP_STAND_IN_PORT as a port number (the default when unset), or SettingsError saying what to set."""
    text = (value or "").strip()
    if not text:
        return DEFAULT_PORT
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise SettingsError(
            f"{PORT_VARIABLE} must be a port number between 1 and 65535, got {value!r}: "
            f"set it to a free port (e.g. `export {PORT_VARIABLE}={DEFAULT_PORT + 100}`), "
            f"or unset it for the default {DEFAULT_PORT}."
        )
    return port


def real_models_forbidden() -> bool:
    """True when WORKSHOP_NO_REAL_MODELS=1 (the fast test tier): no real model may be loaded."""
    return os.environ.get(NO_MODELS_VARIABLE, "") == "1"


def read_settings(env: Mapping[str, str] | None = None) -> StandInSettings:
    """The stand-in's settings from the environment (or `env`), with local defaults."""
    env = os.environ if env is None else env
    return StandInSettings(
        stand_in_port=parse_port(env.get(PORT_VARIABLE)),
        state_dir=Path(env.get("WORKSHOP_STATE_DIR") or REPO_ROOT / ".workshop"),
        chat_gguf=env.get("WORKSHOP_CHAT_GGUF") or None,
        chat_name=env.get("WORKSHOP_CHAT_NAME") or None,
    )

"""Command line of the offline stand-in: python -m infra.standin {serve,start,stop,status}."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from dataclasses import replace

from infra.standin.launcher import (
    StandInError,
    ensure_stand_in,
    is_ours,
    log_file,
    pid_file,
    stand_in_info,
    stand_in_url,
    stop_stand_in,
)
from infra.standin.settings import REPO_ROOT, SettingsError, StandInSettings, read_settings


def serve(settings: StandInSettings, port: int) -> int:
    """Load the models, bind 127.0.0.1:port and serve until SIGTERM or Ctrl-C."""
    from infra.standin.registry import Registry
    from infra.standin.server import make_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("workshop.stand-in")
    registry = Registry(chat_gguf=settings.chat_gguf, chat_name=settings.chat_name)
    for served in registry.models.values():
        if served.warm:
            served.get()  # the readiness probe answers only once these are loaded; the others load when asked
    try:
        server = make_server(port, registry)
    except OSError as exc:
        log.error("cannot bind 127.0.0.1:%d: %s (set WORKSHOP_STAND_IN_PORT to a free port)", port, exc)
        return 1
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    pid_file(settings).write_text(json.dumps({"pid": os.getpid(), "port": port, "checkout": str(REPO_ROOT)}))
    # uvicorn handles SIGTERM itself, then re-raises it to the previous handler: make that one harmless,
    # so that the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: None)
    log.info(
        "serving %s on http://127.0.0.1:%d (pid %d, checkout %s)",
        ", ".join(registry.models),
        port,
        os.getpid(),
        REPO_ROOT,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        pid_file(settings).unlink(missing_ok=True)
        log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command and run it."""
    parser = argparse.ArgumentParser(prog="python -m infra.standin", description=__doc__)
    parser.add_argument("command", choices=["serve", "start", "stop", "status"])
    parser.add_argument("--port", type=int, default=None, help="default: WORKSHOP_STAND_IN_PORT or 11435")
    args = parser.parse_args(argv)
    try:
        settings = read_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.port:
        settings = replace(settings, stand_in_port=args.port)
    if args.command == "serve":
        return serve(settings, settings.stand_in_port)
    if args.command == "start":
        try:
            url, started = ensure_stand_in(settings)
        except StandInError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"stand-in {'started' if started else 'already running'} at {url} (log: {log_file(settings)})")
        return 0
    if args.command == "stop":
        print("stand-in stopped" if stop_stand_in(settings) else "no stand-in of this checkout was running")
        return 0
    url = stand_in_url(settings)
    info = stand_in_info(url)
    if info is None:
        print(f"stand-in at {url}: not running")
        return 1
    whose = "this checkout's" if is_ours(info) else f"another checkout's ({info.get('checkout')})"
    print(f"stand-in at {url}: running, {whose}, pid {info.get('pid')}, serving {', '.join(info.get('models', []))}")
    return 0 if is_ours(info) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`make serve`: find the backends (setup), index the handbook, serve the app on 127.0.0.1:8000.

.venv/bin/python -m app [--port 8000] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import logging
import threading
import time

import httpx
import uvicorn

from app.service import create_app
from helpers.telemetry import json_logs


def announce_when_ready(server: uvicorn.Server, url: str, *, poll_s: float = 0.2) -> None:
    """Print the page's URL once the app answers on it (start-up indexes the handbook first)."""
    while not server.should_exit:
        if server.started:
            try:
                httpx.get(url + "healthz", timeout=10)
            except httpx.HTTPError:
                pass
            else:
                print(f"serving the chat page on {url} (Ctrl-C stops)", flush=True)
                return
        time.sleep(poll_s)


def main() -> None:
    """Parse the options and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m app", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    json_logs("rag")  # one JSON line per stage of every chat turn, with its request id (lesson 14)
    app = create_app()
    print("indexing the documents ... (the page's URL follows once the app answers)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, timeout_graceful_shutdown=5))
    url = f"http://{args.host}:{args.port}/"
    threading.Thread(target=announce_when_ready, args=(server, url), daemon=True, name="announce").start()
    server.run()


if __name__ == "__main__":
    main()

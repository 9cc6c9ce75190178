"""`make serve`: find the backends (setup), index the handbook, serve the app on 127.0.0.1:8000.

.venv/bin/python -m app [--port 8000] [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from app.service import create_app
from helpers.telemetry import json_logs


def main() -> None:
    """Parse the options and serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    json_logs("rag")  # one JSON line per stage of every chat turn, with its request id (lesson 13)
    app = create_app()
    print(f"serving the chat page on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()

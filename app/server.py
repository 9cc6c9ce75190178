"""Serve the chat app in a background thread of a notebook (13_serve.ipynb): the workshop's one uvicorn-in-a-thread."""

from infra.background import BackgroundServer

__all__ = ["BackgroundServer"]

"""The workshop's RAG chat served over HTTP: FastAPI + uvicorn, SSE streaming, a page. Taught in 13_serve.ipynb.

python -m app            (or `make serve`): serves http://127.0.0.1:8000/
"""

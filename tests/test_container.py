"""The app's image (Dockerfile) built and run for real: a private dockerd, a base image made with debootstrap.

Slow: the base image's root filesystem (debootstrap, cached in WORKSHOP_STATE_DIR/container), the build (apt-get and
pip inside, over the host's network), a container on the host network next to the in-process stand-in, a healthy
/healthz and one streamed answer; then the daemon it started is stopped. The fast test checks that
requirements/service.in names every distribution the app's modules import.
"""

from __future__ import annotations

import ast
import re
import sys
import time
from importlib.metadata import packages_distributions
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent


def imported_distributions() -> set[str]:
    """The distributions whose modules app/ and the helpers it imports (transitively) import, lazily or not."""
    todo, seen, top = list((REPO / "app").glob("*.py")), set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                first = name.split(".")[0]
                if first in ("app", "helpers"):
                    module = REPO.joinpath(*name.split("."))
                    todo += [p for p in (module.with_suffix(".py"), module / "__init__.py") if p.exists()]
                elif first not in sys.stdlib_module_names and first != "infra":  # infra: only app/server.py (tests)
                    top.add(first)
    owners = packages_distributions()
    return {normalize(owners[t][0]) for t in top}


def normalize(name: str) -> str:
    """A distribution name as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(path: Path) -> set[str]:
    """The distribution names a requirements file lists (extras and versions dropped)."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(normalize(re.split(r"[\[=<>!~ ;]", line)[0]))
    return names


def test_service_in_names_every_distribution_the_app_imports():
    wanted = imported_distributions()
    assert {"fastapi", "ollama", "openai", "psycopg", "psycopg-pool"} <= wanted, "the import walk still finds them"
    missing = wanted - listed(REPO / "requirements" / "service.in")
    assert not missing, f"add to requirements/service.in (pinned as in requirements/base.txt): {sorted(missing)}"
    unlocked = listed(REPO / "requirements" / "service.in") - listed(REPO / "requirements" / "service.txt")
    assert not unlocked, f"requirements/service.txt lacks {sorted(unlocked)}: regenerate it from service.in"


def test_the_service_lock_pins_what_base_pins():
    base = dict(line.strip().split("==") for line in (REPO / "requirements/base.txt").open() if "==" in line)
    base = {normalize(k): v for k, v in base.items()}
    for line in (REPO / "requirements/service.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==")
            assert base.get(normalize(name)) == version, f"{name}=={version} differs from requirements/base.txt"


def test_the_dockerfile_is_slim_non_root_and_checks_its_health():
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM debian:bookworm-slim$", text, re.M)
    assert re.search(r"^USER rag$", text, re.M) and "useradd" in text
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.M)
    copied = re.findall(r"^COPY (\S+)", text, re.M)
    allowed = (REPO / ".dockerignore").read_text(encoding="utf-8")
    for source in copied:
        assert f"!{source.rstrip('/')}" in allowed.replace("/\n", "\n"), f"{source} is ignored by .dockerignore"


def wait_healthy(docker, name: str, *, timeout: float) -> str:
    """Wait for the container's health check to say healthy; its last status."""
    deadline, status = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        status = docker.health(name)
        if status in ("healthy", "exited", "dead", "unhealthy"):
            return status
        time.sleep(1)
    return status


@pytest.mark.slow
def test_the_image_builds_runs_healthy_and_streams_an_answer(stand_in, tmp_path, capsys):
    from helpers.config import STAND_IN_CHAT_MODEL, read_settings
    from infra.container import Docker, missing_tools, rootfs_tarball, stage_context
    from tests.support.served import parse_sse

    if missing_tools():
        message = f"install {' '.join(missing_tools())} (apt-get install docker.io debootstrap) to build the image"
        if __import__("os").environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    times = {}
    start = time.monotonic()
    tarball = rootfs_tarball(read_settings().state_dir / "container")
    times["debootstrap (or cached)"] = time.monotonic() - start
    port = free_port()
    with Docker() as docker:
        start = time.monotonic()
        docker.import_base(tarball)
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")  # the host's CAs: an inspecting proxy's too
        context = stage_context(REPO, tmp_path, ca_bundle=bundle if bundle.exists() else None)
        docker.build(context, tag="rag-app:test")
        times["import + build"] = time.monotonic() - start
        start = time.monotonic()
        env = {
            "OLLAMA_HOST": stand_in[0],
            "WORKSHOP_OFFLINE": "0",
            "APP_BIND": "127.0.0.1",
            "APP_PORT": str(port),
            "WORKSHOP_GUARDRAILS": "0",
        }
        docker.run(
            "rag-app:test", name="rag-app", env=env, flags=("--health-interval=2s", "--health-start-period=300s")
        )
        status = wait_healthy(docker, "rag-app", timeout=600)
        assert status == "healthy", f"the container is {status!r}:\n{docker.logs('rag-app')}"
        times["healthy"] = time.monotonic() - start
        user = docker.docker("exec", "rag-app", "id", "-u").stdout.strip()
        assert user != "0", "the app runs as a non-root user"
        start = time.monotonic()
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=600) as http:
            question = {"question": "Who may drive a snowmobile at the station?"}
            with http.stream("POST", "/chat/container", json=question) as response:
                assert response.status_code == 200, response.read()
                events = list(parse_sse(response.iter_lines()))
        times["answer"] = time.monotonic() - start
        names = [e for e, _ in events]
        assert "token" in names and names[-1] == "done", names
        assert dict(events)["done"]["model"] == STAND_IN_CHAT_MODEL and dict(events)["done"]["saved"] is True
    with capsys.disabled():
        print("\ncontainer timings (s):", {k: round(v, 1) for k, v in times.items()})
    assert not docker.base.exists(), "the daemon's folder is removed, its mounts too"


def test_the_build_context_holds_only_what_the_dockerfile_copies(tmp_path):
    from infra.container import stage_context

    bundle = tmp_path / "bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "context").mkdir()
    context = stage_context(REPO, tmp_path / "context", ca_bundle=bundle)
    assert sorted(p.name for p in context.iterdir()) == [
        "Dockerfile",
        "app",
        "data",
        "deploy",
        "helpers",
        "requirements",
    ]
    assert (context / "deploy/certs/host-ca.crt").read_text() == bundle.read_text()
    assert not list(context.rglob("__pycache__")) and not (context / "tests").exists()


def test_debootstrap_uses_the_hosts_own_debian_mirror(tmp_path):
    from infra.container import ContainerError, apt_mirror

    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert apt_mirror(sources=tmp_path) == "http://mirror.example/debian"
    with pytest.raises(ContainerError, match="no Debian bookworm mirror"):
        apt_mirror(sources=tmp_path / "nowhere")


def test_the_compose_stack_and_its_alerts_use_what_the_app_exposes():
    import json

    import yaml

    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text(encoding="utf-8"))
    assert set(compose["services"]) == {"app", "ollama", "qdrant", "postgres", "prometheus", "grafana"}
    assert all(p.startswith("127.0.0.1:") for s in compose["services"].values() for p in s.get("ports", []))
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["app:8000"]
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))["groups"][0]["rules"]
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/rag.json").read_text(encoding="utf-8"))
    queries = [r["expr"] for r in rules] + [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    source = "".join((REPO / f).read_text() for f in ("app/state.py", "helpers/telemetry.py", "helpers/metrics.py"))
    defined = set(re.findall(r'"((?:rag|http)_[a-z_]+)"', source))
    for query in queries:
        for metric in re.findall(r"\b(?:rag|http)_[a-z_]+", query):
            assert re.sub(r"_(total|bucket|count|sum)$", "", metric) in defined, f"{metric} in {query!r}"
    assert {"RagHighErrorRate", "RagSlowFirstToken"} <= {r["alert"] for r in rules}

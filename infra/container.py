"""The app's image built and run where images cannot be pulled: a private Docker daemon and a home-made base image.

    python3 -m infra.container rootfs --cache .workshop/container   # debootstrap bookworm into a tarball (CI: early)

A `Docker` starts its own `dockerd --bridge=none --iptables=false` on a socket and data root under a temp folder
(stopped, and the folder removed, on exit); `base_image` makes `debian:bookworm-slim` with debootstrap (minbase, from
the host's own apt mirror) + `docker import`; `build` builds with `--network host`, its output's tail kept in the
error. Containers run with `--network host`, so all traffic stays on 127.0.0.1. Standard library only (CI runs the
rootfs step before the venv exists); it never imports helpers/ or app/.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUITE = "bookworm"
BASE_TAG = "debian:bookworm-slim"
TAIL_LINES = 40


class ContainerError(RuntimeError):
    """A docker, dockerd or debootstrap step failed; the message has the command's last lines and what to do."""


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last lines of a command's output."""
    return "\n".join(text.strip().splitlines()[-lines:])


def apt_mirror(*, sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this host's apt uses (sources.list.d/*.sources or sources.list), for debootstrap."""
    texts = [p.read_text() for p in sorted(sources.glob("sources.list.d/*.sources"))]
    for text in texts:
        for stanza in text.split("\n\n"):
            uri = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            if uri and re.search(rf"^Suites:.*\b{SUITE}\b(?!-)", stanza, re.M) and "security" not in uri.group(1):
                return uri.group(1)
    listed = sources / "sources.list"
    if listed.exists():
        found = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", listed.read_text(), re.M)
        if found:
            return found.group(1)
    raise ContainerError(f"no Debian {SUITE} mirror in {sources}/sources.list(.d): add one, or pass --mirror")


def missing_tools() -> list[str]:
    """The Debian packages to install (apt-get install docker.io debootstrap) before building images."""
    need = {"dockerd": "docker.io", "docker": "docker.io", "debootstrap": "debootstrap"}
    return sorted({pkg for tool, pkg in need.items() if shutil.which(tool) is None})


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on path (a CI job started early and a test share one rootfs tarball)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def rootfs_tarball(cache: Path, *, mirror: str | None = None, timeout: float = 1200) -> Path:
    """A minbase Debian bookworm root filesystem as cache/bookworm-minbase.tar, made once with debootstrap."""
    out = cache / f"{SUITE}-minbase.tar"
    with locked(cache / f"{SUITE}.lock"):
        if out.exists():
            return out
        if shutil.which("debootstrap") is None:
            raise ContainerError("debootstrap is not installed: apt-get install debootstrap")
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache) as tmp:
            root = Path(tmp) / "root"
            cmd = ["debootstrap", "--variant=minbase", SUITE, str(root), mirror or apt_mirror()]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                raise ContainerError(f"{' '.join(cmd)} failed ({done.returncode}):\n{tail(done.stdout + done.stderr)}")
            partial = out.with_suffix(".part")
            subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True, timeout=timeout)
            partial.rename(out)
    return out


def mounts_under(path: Path) -> list[str]:
    """The mount points inside path (from /proc/self/mountinfo), deepest first."""
    table = Path("/proc/self/mountinfo")
    points = [line.split()[4] for line in table.read_text().splitlines()] if table.exists() else []
    return sorted((p for p in points if p.startswith(f"{path}/")), key=len, reverse=True)


def stage_context(repo: Path, dest: Path, *, ca_bundle: Path | None = None) -> Path:
    """A build context holding only what the Dockerfile copies (its COPY sources), plus ca_bundle in deploy/certs/.

    ca_bundle: the host's CA certificates (e.g. /etc/ssl/certs/ca-certificates.crt), for a network whose HTTPS goes
    through an inspecting proxy: the build's apt and pip then trust what the host trusts.
    """
    text = (repo / "Dockerfile").read_text(encoding="utf-8")
    shutil.copy2(repo / "Dockerfile", dest / "Dockerfile")
    for line in re.findall(r"^COPY\s+(.+)$", text, re.M):
        for source in line.split()[:-1]:
            src, out = repo / source, dest / source
            if src.is_dir():
                shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out)
    if ca_bundle is not None:
        (dest / "deploy" / "certs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca_bundle, dest / "deploy" / "certs" / "host-ca.crt")
    return dest


class Docker:
    """A private dockerd (no bridge, no iptables) on its own socket and data root; a context manager that stops it."""

    def __init__(self, *, base: Path | None = None, start_timeout: float = 60) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="dockerd-", dir=base))
        self.socket = self.base / "docker.sock"
        self.log = self.base / "dockerd.log"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Docker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start dockerd and wait until `docker version` answers on its socket."""
        if missing_tools():
            raise ContainerError(
                f"install {' '.join(missing_tools())} first: apt-get install {' '.join(missing_tools())}"
            )
        cmd = [
            "dockerd",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            f"--host=unix://{self.socket}",
            f"--data-root={self.base / 'data'}",
            f"--exec-root={self.base / 'exec'}",
            f"--pidfile={self.base / 'dockerd.pid'}",
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while self.docker("version", check=False, timeout=10).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(remove=False)
                raise ContainerError(f"dockerd did not start:\n{tail(self.log.read_text())}")
            time.sleep(0.5)

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a docker command against this daemon; ContainerError with the output's tail when it fails."""
        cmd = ["docker", f"--host=unix://{self.socket}", *args]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, input=stdin, text=True, errors="replace")
        if check and done.returncode != 0:
            raise ContainerError(
                f"docker {' '.join(args[:3])} failed ({done.returncode}):\n{tail(done.stdout + done.stderr)}"
            )
        return done

    def stop(self, *, remove: bool = True) -> None:
        """Stop every container, then the daemon (TERM, then KILL), and remove its folder."""
        if self.process is not None and self.process.poll() is None:
            running = self.docker("ps", "-q", check=False, timeout=30).stdout.split()
            if running:
                self.docker("rm", "-f", *running, check=False, timeout=60)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        if remove:
            for mount in mounts_under(self.base):  # e.g. the daemon's network namespace (nsfs), deepest first
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
            shutil.rmtree(self.base, ignore_errors=True)

    def import_base(self, tarball: Path, *, tag: str = BASE_TAG) -> None:
        """`docker import` a root filesystem tarball as tag (the stand-in for the registry's image)."""
        self.docker("import", "--change", 'CMD ["bash"]', str(tarball), tag, timeout=600)

    def build(self, context: Path, *, tag: str, dockerfile: Path | None = None, timeout: float = 1800) -> None:
        """docker build --network host; a failure raises ContainerError with the build output's last lines."""
        args = ["build", "--network", "host", "-t", tag]
        if dockerfile is not None:
            args += ["-f", str(dockerfile)]
        self.docker(*args, str(context), timeout=timeout)

    def run(self, image: str, *, name: str, env: dict[str, str] | None = None, flags: tuple[str, ...] = ()) -> str:
        """docker run -d --network host (flags: more docker run options): the container's id."""
        envs = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return self.docker("run", "-d", "--network", "host", "--name", name, *envs, *flags, image).stdout.strip()

    def health(self, name: str) -> str:
        """The container's health status (starting, healthy, unhealthy) or its state when it has stopped."""
        fmt = "{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}"
        return self.docker("inspect", "--format", fmt, name, check=False).stdout.strip()

    def logs(self, name: str) -> str:
        """The container's output, its tail."""
        done = self.docker("logs", name, check=False)
        return tail(done.stdout + done.stderr)


def _main(argv: list[str]) -> int:
    """`rootfs --cache DIR [--mirror URL]`: make the base image's tarball ahead of the container test."""
    parser = argparse.ArgumentParser(prog="python3 -m infra.container")
    parser.add_argument("step", choices=["rootfs"])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--mirror")
    opts = parser.parse_args(argv)
    start = time.monotonic()
    print(rootfs_tarball(opts.cache, mirror=opts.mirror), f"ready in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""The container build's shell scripts, with the system commands they call replaced by recorders:
what they would install and how they would run the chroot, without a Docker engine or a network."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO

SCRIPTS = REPO / "service" / "container"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def _run(script: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LOG": str(tmp_path / "log")}
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args], cwd=tmp_path, env={**environment, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_running_engine_does_not_skip_installing_debootstrap(tmp_path):
    (tmp_path / "bin").mkdir()
    _stub(tmp_path / "bin", "docker", "exit 0")  # `docker info` answers: an engine runs
    _stub(tmp_path / "bin", "dockerd", "exit 0")
    _stub(tmp_path / "bin", "apt-get", 'echo "apt-get $*" >> "$LOG"')
    out = _run("ensure-docker.sh", tmp_path, SBIN_DIRS=str(tmp_path / "no-sbin"))
    assert out.returncode == 0, out.stderr
    installs = [line for line in (tmp_path / "log").read_text().splitlines() if " install " in line]
    assert len(installs) == 1 and installs[0].endswith(" debootstrap"), installs


def test_nothing_is_installed_when_everything_is_there(tmp_path):
    (tmp_path / "bin").mkdir()
    for tool in ("docker", "dockerd", "debootstrap"):
        _stub(tmp_path / "bin", tool, "exit 0")
    _stub(tmp_path / "bin", "apt-get", 'echo "apt-get $*" >> "$LOG"')
    assert _run("ensure-docker.sh", tmp_path, SBIN_DIRS=str(tmp_path / "no-sbin")).returncode == 0
    assert not (tmp_path / "log").exists()


def test_a_callers_tmpdir_does_not_leak_into_the_chroot(tmp_path):
    """The base image build runs Debian's scripts inside the new root, where the caller's TMPDIR does
    not exist: debootstrap and every chroot step must run without it."""
    bin_dir, caller_tmp = tmp_path / "bin", tmp_path / "caller-tmp"
    bin_dir.mkdir()
    caller_tmp.mkdir()
    record = 'echo "$(basename "$0") TMPDIR=${TMPDIR-unset}" >> "$LOG"'
    _stub(bin_dir, "debootstrap", record + '\nmkdir -p "$4/usr/local/share/ca-certificates"')
    _stub(bin_dir, "chroot", record)
    _stub(bin_dir, "docker", 'cat > /dev/null; [[ "$1" == image ]] && echo 1000000; exit 0')
    out = _run("build-base-image.sh", tmp_path, "test:tag", TMPDIR=str(caller_tmp),
               DEBIAN_MIRROR="http://mirror.invalid/debian", EXTRA_CA_CERTS=" ")  # fmt: skip
    assert out.returncode == 0, out.stderr
    calls = (tmp_path / "log").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["debootstrap", "chroot", "chroot"]
    assert all(c.endswith("TMPDIR=unset") for c in calls), calls
    assert os.listdir(caller_tmp) == []  # the root itself was made under the caller's TMPDIR, and removed

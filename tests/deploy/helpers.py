"""Shared by the deploy tests: paths, free ports, finding or installing a system tool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.redis_server import free_port as free_port  # the deploy tests take it from here

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would redirect a child: the layer,
    the database, ``PORT`` and the Django settings the Django tests of the same run
    set, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "CHANNEL_LAYER_URL", "DATABASE_URL", "PORT",
                        "DJANGO_SETTINGS_MODULE", "WEB_CONCURRENCY"}}
    env.update(extra)
    return env


def which(tool: str) -> str | None:
    return shutil.which(tool, path=SBIN_PATH)


def tool_or_install(tool: str, package: str) -> str:
    """The path of ``tool``; installs Debian's ``package`` first when it is missing.

    Fails (never skips) when the tool cannot be had: CI installs it in .ci/run.
    """
    found = which(tool)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"{tool} is missing and cannot be installed here (apt-get install {package})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    found = which(tool)
    if not found:
        pytest.fail(f"apt-get install {package} did not provide {tool}")
    return found


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> int:
    """The status of the first answer from ``url`` (any status counts as an answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"nothing answered {url}:\n{log.read_text(errors='replace')}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

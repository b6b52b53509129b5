"""make's system-deps step: installs the missing Debian packages as root, else names the apt command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "system-deps"


def run_system_deps(tmp_path, uid: int):
    """Run the script with a PATH holding only a stub `id` and a recording `apt-get` (no chromium)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "apt.log"
    (stubs / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (stubs / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {"PATH": str(stubs), "PYTHON": sys.executable}
    result = subprocess.run([shutil.which("bash"), str(SCRIPT)], env=env, capture_output=True, text=True)
    return result, log.read_text().splitlines() if log.exists() else []


def test_non_root_stops_with_the_apt_command(tmp_path):
    result, apt_calls = run_system_deps(tmp_path, uid=1000)
    assert result.returncode == 1 and apt_calls == []
    assert "Run: sudo apt-get install -y " in result.stderr and "chromium" in result.stderr.split("Run:")[1]


def test_root_installs_the_missing_packages(tmp_path):
    result, apt_calls = run_system_deps(tmp_path, uid=0)
    assert result.returncode == 0, result.stderr
    assert apt_calls[0] == "update -qq"
    assert apt_calls[1].startswith("install -y -qq") and "chromium" in apt_calls[1].split()


def test_without_python_both_python_packages_are_named(tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "id").write_text("#!/bin/sh\necho 1000\n")
    (stubs / "id").chmod(0o755)
    result = subprocess.run(
        [shutil.which("bash"), str(SCRIPT)],
        env={"PATH": str(stubs), "PYTHON": "python3"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "sudo apt-get install -y python3 python3-venv" in result.stderr

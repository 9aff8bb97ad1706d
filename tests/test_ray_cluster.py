"""A study on a Ray cluster it joins by address. Its own module: `ray stop --force` stops every Ray
on the machine, and a pytest process that is itself a Ray driver (test_study.py's local Ray)
ends 60 s after its Ray is gone."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ticketlab.cli import main
from study_helpers import COMPARISON, comparable, finished


def test_a_study_joins_a_running_ray_cluster(tmp_path):
    """`ray start --head` as a cluster's head node would be started, then a driver that joins it by
    its address: the study's runs are the serial run's."""
    pytest.importorskip("ray")
    ray = str(Path(sys.executable).with_name("ray"))
    scratch = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    # Token authentication is Ray's business (a driver on another machine needs the head's token);
    # here head and driver are one user on one machine, so it is off.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    started = subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--port", "0", "--include-dashboard=false",
                              "--disable-usage-stats", "--temp-dir", scratch], capture_output=True, text=True, env=env)
    try:
        assert started.returncode == 0, started.stderr
        address = re.search(r"ray start --address='([^']+)'", started.stdout + started.stderr).group(1)
        preset = tmp_path / "comparison.yaml"
        preset.write_text(COMPARISON)
        joined = subprocess.run([sys.executable, "-m", "ticketlab.cli", "run", str(preset), "--backend", "ray",
                                 "--address", address, "--quiet", "--runs-dir", str(tmp_path / "cluster")],
                                capture_output=True, text=True, env=env)
        assert joined.returncode == 0, joined.stderr
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)
        shutil.rmtree(scratch, ignore_errors=True)
    assert main(["run", str(preset), "--quiet", "--runs-dir", str(tmp_path / "serial")]) == 0
    cluster, serial = finished(tmp_path / "cluster"), finished(tmp_path / "serial")
    assert {n: comparable(s) for n, s in cluster.items()} == {n: comparable(s) for n, s in serial.items()}

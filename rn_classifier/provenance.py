"""What made a run: git SHA, package versions, date, and the synthetic-data flag."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from . import __version__

_PACKAGES = ("torch", "timm", "monai", "lightly", "lightning", "scikit-learn", "pyradiomics-bhklab",
             "SimpleITK", "nibabel", "numpy", "scipy", "pandas")


def git_sha(cwd: str | Path | None = None) -> str:
    """The git commit of the rn-classifier source tree, or 'unknown' outside a checkout."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    return sha + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"rn-classifier": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_provenance() -> dict:
    return {"git_sha": git_sha(), "versions": package_versions(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform()}


def machine_description() -> str:
    """CPU model, core count and load average: the line every benchmark result starts with
    (figures from a shared, loaded machine are read differently from an idle one)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = (", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg")
            else "unknown")
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()}, Python "
            f"{platform.python_version()}; load average at start {load}")

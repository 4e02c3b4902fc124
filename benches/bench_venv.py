"""The Python packages a benchmark needs, in a virtual environment under ~/.cache.

`ensure({"numpy": "numpy", ...})` returns when every module imports; otherwise it creates the
environment if missing, pip-installs the missing packages into it and re-runs the script there.
"""
import os
import subprocess
import sys

VENV = os.path.join(os.path.expanduser("~"), ".cache", "audiolake-bench-venv")


def ensure(packages):
    """packages maps an importable module name to its pip requirement."""
    missing = [m for m in packages if not _imports(sys.executable, m)]
    if not missing:
        return
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit(f"{', '.join(missing)} still missing in {VENV} after installing")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True, stdout=sys.stderr)
    wanted = [packages[m] for m in packages if not _imports(python, m)]
    if wanted:
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *wanted], check=True, stdout=sys.stderr)
    os.execv(python, [python] + sys.argv)


def _imports(python, module):
    if python == sys.executable:
        try:
            __import__(module)
            return True
        except ImportError:
            return False
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0

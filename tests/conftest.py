import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtual environment running pytest
os.environ.setdefault('MPLBACKEND', 'Agg')


def run_rf_ref(*args, cwd) -> str:
    "Run the `rf-ref` command of BIN with `args` in `cwd`; its stdout, or a failure showing the end of its stderr."
    import subprocess
    r = subprocess.run([str(BIN / 'rf-ref'), *args], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout

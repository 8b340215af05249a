import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtual environment running pytest
os.environ.setdefault('MPLBACKEND', 'Agg')

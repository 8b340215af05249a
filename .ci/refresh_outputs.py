"""Run notebooks again and store fresh outputs in the cells that show them, so no stored output predates its code.

    .venv/bin/python .ci/refresh_outputs.py nbs/31_train.ipynb [more notebooks]   # then nbdev_clean, and commit

Cells run as `nbdev_test` runs them (the `tst_flags` of settings.ini skipped, in the notebook's folder); a cell
keeps an output only if it had one before (a skipped cell keeps the one it had), so the choice of what a notebook shows stays the author's. A failing
cell stops the run and leaves the notebook as it was.
"""
import sys
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import NBProcessor
from nbdev.frontmatter import FrontmatterProc


def refresh(path: Path, skip: set) -> int:
    "Re-run `path`; return how many stored outputs were rewritten."
    nb, skipped = NBProcessor(path, procs=FrontmatterProc, process=True).nb, set()
    def no_eval(cell):
        if cell.cell_type != 'code': return True
        d = getattr(cell, 'directives_', {}) or {}
        if d.get('eval:', [''])[0].lower() == 'false' or skip & d.keys(): skipped.add(cell.get('id')); return True
        return False
    shell = CaptureShell(path)
    shell.run_cell("import matplotlib; matplotlib.rcParams['figure.dpi'] = 72")   # Jupyter's inline size, not execnb's 100 dpi
    with working_directory(path.parent): shell.run_all(nb, exc_stop=True, preproc=no_eval)
    fresh = {c.get('id'): c.get('outputs', []) for c in nb.cells if c.cell_type == 'code'}
    raw, n = read_nb(path), 0
    for c in raw.cells:
        if c.cell_type == 'code' and c.get('outputs') and c.get('id') not in skipped:   # a skipped cell keeps its output
            c['outputs'] = [o for o in fresh.get(c.get('id'), []) if o.get('name') != 'stderr']; n += 1   # no library warnings
    write_nb(raw, path)
    return n


if __name__ == '__main__':
    skip = set(get_config().tst_flags.split())
    for p in map(Path, sys.argv[1:]):
        print(f'{p}: {refresh(p, skip)} outputs refreshed', flush=True)

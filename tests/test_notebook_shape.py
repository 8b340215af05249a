"""The notebooks read in small steps: no code cell over 40 lines, a median cell of at most 9 lines, and most
definitions followed at once by a check that could fail."""
import json, re, statistics
from conftest import ROOT

CHECK = re.compile(r'\b(assert|test_eq|test_close|test_fail|test_ne|test_is|test_warns)\b')


def code_cells(path):
    return [''.join(c['source']) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code']


def shape(path) -> dict:
    "Lines per code cell, and (checked, defined): exported cells with a def or class, and those a check cell follows."
    cells = code_cells(path); lines = [len(s.strip().splitlines()) for s in cells if s.strip()]
    exported = lambda s: re.search(r'^#\|\s*export', s, re.M)
    defs = [i for i, s in enumerate(cells) if exported(s) and re.search(r'^(def|class) ', s, re.M)]
    checked = [i for i in defs if i + 1 < len(cells) and CHECK.search(cells[i + 1]) and not exported(cells[i + 1])]
    return {'lines': lines, 'defined': len(defs), 'checked': len(checked)}


def test_shape_measures_what_it_says(tmp_path):
    cell = lambda s: {'cell_type': 'code', 'source': s.splitlines(keepends=True)}
    nb = {'cells': [cell('#| export\ndef f(): pass'), cell('assert f() is None'), cell('#| export\ndef g(): pass'), cell('x = 1')]}
    (tmp_path / 'n.ipynb').write_text(json.dumps(nb))
    got = shape(tmp_path / 'n.ipynb')
    assert (got['lines'], got['defined'], got['checked']) == ([2, 1, 2, 1], 2, 1)


def test_cells_are_small_and_definitions_checked():
    notebooks = sorted((ROOT / 'nbs').glob('[0-9][0-9]_*.ipynb'))
    shapes = {p.name: shape(p) for p in notebooks}
    big = [(p, n) for p, s in shapes.items() for n in s['lines'] if n > 40]
    assert not big, f'code cells over 40 lines: {big}'
    median = statistics.median(n for s in shapes.values() for n in s['lines'])
    assert median <= 9, f'the median code cell has {median} lines (at most 9)'
    low = {p: f"{s['checked']}/{s['defined']}" for p, s in shapes.items() if s['defined'] and s['checked'] < 0.7 * s['defined']}
    assert not low, f'notebooks where under 70% of definitions are followed by a check: {low}'

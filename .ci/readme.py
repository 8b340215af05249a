"""Write README.md from nbs/index.ipynb (quarto, which nbdev_readme needs, is not used here).

Usage: python .ci/readme.py [--check]   (--check exits 1 if README.md is out of date)
"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render() -> str:
    nb = json.loads((root / 'nbs' / 'index.ipynb').read_text())
    parts = []
    for cell in nb['cells']:
        src = ''.join(cell['source']).strip()
        if not src or src.startswith('#|'): continue
        parts.append(src if cell['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, path = render(), root / 'README.md'
    if '--check' in sys.argv:
        if path.read_text() != text: sys.exit('README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py`')
    else: path.write_text(text)

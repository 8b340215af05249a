"""`rf-ref ablate` end to end at a tiny budget: two rows, one seed, a few steps. Structure only: no direction is asserted."""
import json, math, os, subprocess
from conftest import BIN

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}


def test_ablate_two_rows_tiny(tmp_path):
    exe = str(BIN / 'rf-ref')
    assert 'codebook-x2' in subprocess.run([exe, 'ablate', '--help'], capture_output=True, text=True).stdout
    args = [exe, 'ablate', '--out', str(tmp_path), '--rows', 'pixel,rf', '--seeds', '1', '--steps', '3', '--prompts', '1',
            '--images', '1', '--scenes', '4', '--device', 'cpu', 'mot.depth=1', 'train.batch_size=8']
    r = subprocess.run(args, capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ('ablation.json', 'ablation.md', 'ablation.png'): assert (tmp_path / f).exists(), f
    report = json.loads((tmp_path / 'ablation.json').read_text())
    assert set(report['rows']) == {'pixel', 'rf'} and report['budget']['steps'] == 3 and len(report['cells']) == 2
    for row in report['rows'].values():
        lo, hi = row['overall_ci']
        assert 0 <= lo <= row['overall'] <= hi <= 1 and math.isfinite(row['fid']) and row['steps'] == 3
        assert set(row['scores']) == {'single_object', 'two_objects', 'counting', 'colors', 'position', 'color_attr'}
        assert set(row['understanding_per_type']) >= {'color', 'count', 'shape'}
    lines = (tmp_path / 'ablation.md').read_text().splitlines()   # ShapesEval table, blank line, understanding per type
    assert len(lines) == 9 and lines[2].startswith('| pixel | 0.25 |') and lines[3].startswith('| rf | 0.76 |')
    assert lines[5].startswith('| row | color |') and lines[8].startswith('| rf |')
    r2 = subprocess.run(args, capture_output=True, text=True, env=ENV)                 # resumes: nothing left to run
    assert r2.returncode == 0 and 'cells to run' not in r2.stdout, r2.stdout

"""`rf-ref digits-curve` end to end on a tiny budget: points, resume, the scores and the table are well formed."""
import json
from conftest import run_rf_ref


def run(*args, cwd): return run_rf_ref('digits-curve', *args, cwd=cwd)


def test_digits_curve_points_resume_and_plot(tmp_path):
    common = ['--root', str(tmp_path), '--n-eval', '20', 'mot.depth=1', 'train.batch_size=8']
    run('train', '--name', 'pixel-s0', '--examples', '6', *common, 'model.rf=false', cwd=tmp_path)
    out = run('train', '--name', 'pixel-s0', '--examples', '6,12', *common, 'model.rf=false', cwd=tmp_path)  # resumes
    assert 'resumed pixel-s0 at step 1' in out and 'pixel-s0 @ 12 gen examples (2 steps' in out, out
    curve = json.loads((tmp_path / 'pixel-s0' / 'curve.json').read_text())
    assert [p['examples'] for p in curve['points']] == [6, 12] and [p['steps'] for p in curve['points']] == [1, 2]
    for p in curve['points']:
        assert 0 <= p['accuracy'] <= 1 and p['fid'] > 0 and p['n'] == 20 and set(p['per_digit']) <= set(map(str, range(10))), p
    table = run('plot', str(tmp_path / 'pixel-s0'), '--out', str(tmp_path / 'curve.png'), cwd=tmp_path)
    assert table.count('| pixel-s0 |') == 2 and (tmp_path / 'curve.png').exists() and (tmp_path / 'curve.md').exists()

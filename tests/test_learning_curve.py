"""`rf-ref curve` end to end on a tiny budget: points, resume, table and plots are well formed."""
import json
from conftest import run_rf_ref


def run(*args, cwd): return run_rf_ref('curve', *args, cwd=cwd)


def test_learning_curve_points_resume_and_plot(tmp_path):
    common = ['--root', str(tmp_path), '--prompts', '1', '--images', '1', '--scenes', '2']
    run('train', '--name', 'rf', '--examples', '24', *common, cwd=tmp_path)
    out = run('train', '--name', 'rf', '--examples', '24,48', *common, cwd=tmp_path)   # resumes, adds one point
    assert 'resumed rf at step 1' in out and 'rf @ 48 gen examples (2 steps' in out
    curve = json.loads((tmp_path / 'rf' / 'curve.json').read_text())
    assert [p['examples'] for p in curve['points']] == [24, 48] and [p['steps'] for p in curve['points']] == [1, 2]
    for p in curve['points']:
        s = p['shapeseval']
        assert 0 <= s['overall_ci'][0] <= s['overall'] <= s['overall_ci'][1] <= 1 and len(s['scores']) == 6
        assert set(p['understanding']['per_type']) <= {'color', 'count', 'shape', 'position'} and p['fid'] >= 0
    assert (tmp_path / 'rf' / 'ema_48' / 'ema.safetensors').exists() and (tmp_path / 'rf' / 'blueprints_48.png').exists()
    table = run('plot', str(tmp_path / 'rf'), '--out', str(tmp_path / 'curve.png'), cwd=tmp_path)
    assert table.count('| rf |') == 2 and (tmp_path / 'curve.png').exists() and (tmp_path / 'curve_walltime.png').exists()

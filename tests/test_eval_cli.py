"""The evaluation commands (`rf-ref eval`, `rf-ref train-judge`) through the installed console script, as a user runs them."""
import json, os, subprocess
from conftest import ROOT, BIN

ENV = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'MPLBACKEND': 'Agg'}


def rf_ref(*args, check=True):
    out = subprocess.run([str(BIN / 'rf-ref'), *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=3600)  # a hang guard only: a slow machine must pass
    if check and out.returncode != 0: raise AssertionError(f'exit {out.returncode}\n{out.stdout}\n{out.stderr}')
    return out


def test_help():
    out = rf_ref('eval', '--help')
    for flag in ('--renderer', '--noise', '--ckpt', '--images-per-prompt', '--out', 'rf-ref train-judge'): assert flag in out.stdout
    assert '--steps' in rf_ref('train-judge', '--help').stdout


def test_renderer_and_noise_reports(tmp_path):
    rf_ref('eval', '--renderer', '--prompts-per-category', '10', '--understanding', '20', '--out', str(tmp_path / 'r.json'), '--quiet')
    rf_ref('eval', '--noise', '--prompts-per-category', '10', '--understanding', '0', '--out', str(tmp_path / 'n.json'), '--quiet')
    r, n = (json.loads((tmp_path / f).read_text()) for f in ('r.json', 'n.json'))
    assert set(r['shapes_eval']['scores']) == {'single_object', 'two_objects', 'counting', 'colors', 'position', 'color_attr'}
    assert r['shapes_eval']['overall'] >= 0.95 and n['shapes_eval']['overall'] <= 0.05   # measured: 1.000 and 0.000 (AVX-512, AVX2)
    lo, hi = r['shapes_eval']['overall_ci']
    assert lo <= r['shapes_eval']['overall'] <= hi
    assert r['understanding']['overall'] > 0.9 and 'understanding' not in n
    assert r['fid_judge_vs_renderer'] < n['fid_judge_vs_renderer']
    assert r['shapes_eval']['config']['images_per_prompt'] == 4 and r['judge']['sha256']


def test_clear_errors(tmp_path):
    out = rf_ref('eval', '--renderer', '--judge', str(tmp_path / 'nope.safetensors'), check=False)
    assert out.returncode == 2 and 'rf-ref train-judge --out' in out.stderr and 'Traceback' not in out.stderr, out.stderr
    out = rf_ref('eval', check=False)
    assert out.returncode == 2 and 'one of the arguments --renderer --noise --ckpt is required' in out.stderr
    out = rf_ref('eval', '--noise', '--images-per-prompt', '0', check=False)
    assert out.returncode == 2 and 'argument --images-per-prompt: 0 must be at least 1' in out.stderr

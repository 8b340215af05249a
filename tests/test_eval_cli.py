"""The evaluation command line (`python -m rf_ref.eval`, wired as `rf-ref eval`) as a user runs it."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'MPLBACKEND': 'Agg'}


def run(*args, check=True):
    out = subprocess.run([sys.executable, '-m', 'rf_ref.eval', *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=3600)  # a hang guard only: a slow machine must pass
    if check and out.returncode != 0: raise AssertionError(f'exit {out.returncode}\n{out.stdout}\n{out.stderr}')
    return out


def test_help():
    out = run('--help')
    for flag in ('--renderer', '--noise', '--ckpt', '--images-per-prompt', '--out'): assert flag in out.stdout
    assert '--steps' in run('train-judge', '--help').stdout


def test_renderer_and_noise_reports(tmp_path):
    run('--renderer', '--prompts-per-category', '10', '--understanding', '20', '--out', str(tmp_path / 'r.json'), '--quiet')
    run('--noise', '--prompts-per-category', '10', '--understanding', '0', '--out', str(tmp_path / 'n.json'), '--quiet')
    r, n = (json.loads((tmp_path / f).read_text()) for f in ('r.json', 'n.json'))
    assert set(r['shapes_eval']['scores']) == {'single_object', 'two_objects', 'counting', 'colors', 'position', 'color_attr'}
    assert r['shapes_eval']['overall'] >= 0.95 and n['shapes_eval']['overall'] <= 0.05
    lo, hi = r['shapes_eval']['overall_ci']
    assert lo <= r['shapes_eval']['overall'] <= hi
    assert r['understanding']['overall'] > 0.9 and 'understanding' not in n
    assert r['fid_judge_vs_renderer'] < n['fid_judge_vs_renderer']
    assert r['shapes_eval']['config']['images_per_prompt'] == 4 and r['judge']['sha256']


def test_clear_errors(tmp_path):
    out = run('--renderer', '--judge', str(tmp_path / 'nope.safetensors'), check=False)
    assert out.returncode != 0 and 'python -m rf_ref.judge --out' in out.stderr
    out = run(check=False)
    assert out.returncode == 2 and 'one of the arguments --renderer --noise --ckpt is required' in out.stderr

"""`rf-ref demo` as `make demo` runs it, through the installed command (a tiny budget)."""
import json, subprocess
from conftest import ROOT, BIN


def test_demo_command_end_to_end(tmp_path):
    out = tmp_path / 'demo'
    r = subprocess.run([str(BIN / 'rf-ref'), 'demo', '--out', str(out), '--device', 'cpu', '--minutes', '2',
                        '--eval-prompts', '1', 'train.stages.0.steps=4', 'train.log_every=2'],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for f in ('samples.png', 'judged.png', 'shapeseval.png', 'losses.png', 'metrics.json'):
        assert (out / f).exists(), f
        assert f'wrote {out / f}' in r.stdout
    m = json.loads((out / 'metrics.json').read_text())
    assert m['steps'] == 4 and set(m['shapeseval']['scores']) == {'single_object', 'two_objects', 'counting', 'colors',
                                                                     'position', 'color_attr'}

"""`rf-ref demo` as `make demo` runs it, through the installed command (a tiny budget)."""
import json, subprocess
from conftest import BIN

CATEGORIES = {'single_object', 'two_objects', 'counting', 'colors', 'position', 'color_attr'}


def test_demo_command_end_to_end(tmp_path):
    out = tmp_path / 'demo'
    r = subprocess.run([str(BIN / 'rf-ref'), 'demo', '--out', str(out), '--device', 'cpu', '--steps', '4',
                        '--eval-prompts', '1', '--plan-prompts', '1', 'train.log_every=2'],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    files = ('samples.png', 'judged.png', 'shapeseval.png', 'losses.png', 'samples_shipped.png', 'judged_shipped.png',
             'shapeseval_shipped.png', 'metrics.json', 'report.md')
    for f in files:
        assert (out / f).exists(), f
        assert f in r.stdout.split('== pictures and numbers in')[1]
    assert '== fresh run: shapes-tiny on cpu, 4 steps' in r.stdout and 'STOPPED EARLY' not in r.stdout
    assert '== shipped checkpoint' in r.stdout and r.stdout.count('ShapesEval overall') == 2
    m = json.loads((out / 'metrics.json').read_text())
    assert m['steps'] == 4 and m['stopped_early'] is False and set(m['shapeseval']['scores']) == CATEGORIES
    assert set(m['shipped']['shapeseval']['scores']) == CATEGORIES and 'understanding' in m['shipped']
    assert m['plan']['shapes_eval']['oracle_plan']['config']['prompts_per_category'] == 1 and 'plan' in m['shipped']
    card = (out / 'report.md').read_text()
    assert card.count('| shipped checkpoint |') == 3 and f"**{m['shapeseval']['overall']:.3f}**" in card


def test_demo_twice_into_one_folder(tmp_path):
    "`make demo` run again replaces the demo's own run: the second trains afresh instead of being refused as another run."
    out = tmp_path / 'demo'
    for steps in ('4', '2'):
        r = subprocess.run([str(BIN / 'rf-ref'), 'demo', '--out', str(out), '--device', 'cpu', '--steps', steps, '--no-shipped',
                            '--eval-prompts', '1', '--plan-prompts', '0', 'train.log_every=1', 'train.ckpt_every=2'], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / 'metrics.json').read_text())['steps'] == 2
    logged = [json.loads(l)['step'] for l in (out / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert logged == [1, 2], logged                                   # the second run's log alone
    assert sorted(p.name for p in (out / 'run' / 'ckpt').glob('step-*')) == ['step-00000002']

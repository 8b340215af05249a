"""`make test` must refuse an unexported or uncleaned notebook: run the same check in a scratch clone."""
import json, subprocess
import pytest
from conftest import ROOT, BIN


@pytest.fixture
def clone(tmp_path):
    if not (ROOT / '.git').exists(): pytest.fail('tests must run inside a git checkout of rf_ref')
    dst = tmp_path / 'clone'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(dst)], check=True)
    return dst


def check(repo):
    return subprocess.run(['bash', '.ci/check-nbdev', str(BIN)], cwd=repo, capture_output=True, text=True)


def edit_notebook(path, fn):
    nb = json.loads(path.read_text()); fn(nb); path.write_text(json.dumps(nb, indent=1) + '\n')


def test_committed_tree_passes(clone):
    out = check(clone)
    assert out.returncode == 0, out.stdout + out.stderr


def test_unexported_change_fails(clone):
    def add_function(nb):
        nb['cells'].append({'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': [],
                            'source': ['#| export\n', 'def added_but_not_exported(): return 1']})
    edit_notebook(clone / 'nbs' / '01_config.ipynb', add_function)
    out = check(clone)
    assert out.returncode == 1 and 'run nbdev_export' in out.stdout


def test_uncleaned_notebook_fails(clone):
    def dirty(nb):
        nb['cells'][0]['metadata'] = {'collapsed': True, 'scrolled': True}
        nb['metadata']['widgets'] = {'state': {}}
    edit_notebook(clone / 'nbs' / '12_datasets.ipynb', dirty)
    out = check(clone)
    assert out.returncode == 1 and 'run nbdev_clean' in out.stdout

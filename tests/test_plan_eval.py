"""`rf-ref eval --ckpt X --plan`: the plan diagnostics of the plan notebook in the JSON report, as a user runs them."""
import json
from cli import rf_ref, one_line_error

ROWS = {'sampled', 'oracle_plan', 'plan_only', 'true_plan_codes', 'label_ceiling'}
CATEGORIES = {'single_object', 'two_objects', 'counting', 'colors', 'position', 'color_attr'}


def test_plan_report_of_the_shipped_checkpoint(tmp_path):
    out = tmp_path / 'r.json'
    r = rf_ref('eval', '--ckpt', 'data/rf_shapes-tiny', '--plan', '200,100,2,1', '--prompts-per-category', '1',
               '--images-per-prompt', '1', '--understanding', '0', '--no-fid', '--quiet', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = [l for l in r.stdout.splitlines() if l.startswith('plan: ')]
    assert len(summary) == 1 and 'k-means' in summary[0] and 'oracle plan' in summary[0], r.stdout
    plan = json.loads(out.read_text())['plan']
    probe, split = plan['probe'], plan['shapes_eval']
    assert probe['config'] == {'n_fit': 200, 'n_test': 100, 'seed': 0, 'k': 256, 'grid': 4}
    assert set(split) == ROWS and set(plan['seconds']) == {'probe', 'shapes_eval'}
    for row in ('vq', 'kmeans', 'labels'):
        assert probe[row]['cells'] == 100 * 16 and 0 <= probe[row]['accuracy'] <= 1
        assert probe[row]['background_baseline'] == probe['labels']['background_baseline']
    # the renderer's own labels as codes are read back exactly: labels and probe agree cell by cell
    assert probe['labels']['accuracy'] == 1.0 and probe['labels']['object_accuracy'] == 1.0
    # k-means codes predict object cells only when cell labels sit on the R grid the way the encoder pools it
    # (labels transposed against the codes: about 0); measured 0.34 on these 200 + 100 renders
    assert probe['kmeans']['object_accuracy'] > 0.2
    assert 1 <= probe['vq']['codes_used'] <= 256 and 1 <= probe['vq']['perplexity'] <= probe['vq']['codes_used']
    for name, s in split.items():
        assert set(s['scores']) == CATEGORIES, name
        assert s['config']['prompts_per_category'] == 2 and s['config']['images_per_prompt'] == 1
        assert all(lo - 1e-9 <= s['scores'][c] <= hi + 1e-9 for c, (lo, hi) in s['ci'].items()), name


def test_plan_refuses_bad_use():
    one_line_error(rf_ref('eval', '--renderer', '--plan'), '--plan', 'use it with --ckpt')
    one_line_error(rf_ref('eval', '--ckpt', 'data/rf_shapes-tiny', '--plan', '10,10,1'), '--plan', 'FIT,TEST,PROMPTS,IMAGES')
    one_line_error(rf_ref('eval', '--ckpt', 'data/rf_shapes-tiny', '--plan', '10,0,1,1'), '--plan', 'must be at least 1')


def test_eval_changes_sampling_settings_of_a_checkpoint(tmp_path):
    "`--sample KEY=VALUE` samples the checkpoint with other settings, and the report records the settings used."
    out = tmp_path / 'r.json'
    r = rf_ref('eval', '--ckpt', 'data/rf_shapes-tiny', '--sample', 'top_k=0', '--sample', 'sample.w_rep=1.5',
               '--prompts-per-category', '1', '--images-per-prompt', '1', '--understanding', '0', '--no-fid', '--quiet', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    used = json.loads(out.read_text())['sample']
    assert (used['top_k'], used['w_rep'], used['w_pix']) == (0, 1.5, 3.0)      # changed, changed, the checkpoint's own
    for bad, says in ((['--sample', 'topk'], "--sample 'topk'"), (['--sample', 'top_k=x'], "sample.top_k='x' is not an integer")):
        r = rf_ref('eval', '--ckpt', 'data/rf_shapes-tiny', *bad, '--out', tmp_path / 'bad.json')
        assert r.returncode != 0 and says in one_line_error(r), r.stderr[-2000:]
        assert not (tmp_path / 'bad.json').exists()
    r = rf_ref('eval', '--renderer', '--sample', 'top_k=0', '--out', tmp_path / 'bad.json')
    assert r.returncode != 0 and 'use it with --ckpt' in one_line_error(r)

"""Bad input from a scripted campaign, run as real `rf-ref` processes: each ends in one `rf-ref CMD: error:` line that
names the value and the fix, exit 2, no traceback, nothing written. Damaged checkpoints are copies of one tiny real run,
damaged and then given a manifest that matches again, so the damage is found by the loaders, not by the manifest check;
`load_train_state` is called in-process and must raise CheckpointError for each damage (a resume falls back past it)."""
import dataclasses, json, os, shutil, subprocess, sys, typing
import pytest, torch
from cli import ENV, one_line_error, rehash, rf_ref

TINY = ['mot.depth=1', 'mot.width=64', 'mot.heads=2', 'mot.kv_heads=1', 'mot.ffn_hidden=128', 'encoder.depth=1',
        'encoder.width=32', 'encoder.heads=2', 'encoder.mlp_hidden=64', 'vq.codebook_size=32', 'encoder.pretrained=',
        'train.batch_size=8', 'data.n_train=64', 'train.warmup_steps=2', 'train.stages.0.steps=2', 'train.log_every=1',
        'train.ckpt_every=1', 'train.keep_last=2']
SAMPLE = ['--prompt', 'a red circle', '--n', '1', '--sample-steps', '2', '--device', 'cpu']
EVAL = ['--prompts-per-category', '1', '--images-per-prompt', '1', '--understanding', '0', '--no-fid', '--quiet']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A real two-step run: <run>/ckpt/step-00000002 is the checkpoint every damage starts from."
    out = tmp_path_factory.mktemp('bad') / 'run'
    r = rf_ref('train', '--device', 'cpu', '--out', out, *TINY); assert r.returncode == 0, r.stderr[-3000:]
    return out


def damaged(run, tmp_path, change, fix_manifest=True):
    "A copy of the run's newest checkpoint changed by `change(folder)`, with a manifest that matches it again."
    d = tmp_path / 'damaged'; shutil.copytree(run / 'ckpt' / 'step-00000002', d); change(d)
    if fix_manifest: rehash(d)
    return d


def edit_json(name, fn):
    def change(d): obj = json.load(open(d / name)); fn(obj); (d / name).write_text(json.dumps(obj))
    return change


# ---- NaN and inf: every float field of every config section, every float flag of every command

def float_fields():
    "'section.field' of every float field, and of every tuple of numbers (train.betas, sample.guidance_interval)."
    from rf_ref.core.config import Config, StageConfig
    out = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config).get(section.name)
        if not dataclasses.is_dataclass(cls): continue
        for f in dataclasses.fields(cls):
            t = typing.get_type_hints(cls)[f.name]
            if t is float: out.append((f'{section.name}.{f.name}', 'float'))
            elif t is tuple and f.default is not dataclasses.MISSING and all(isinstance(v, float) for v in f.default):
                out.append((f'{section.name}.{f.name}', 'tuple'))
    out += [(f'train.stages.0.{f.name}', 'float') for f in dataclasses.fields(StageConfig) if f.type in (float, 'float')]
    return out


def test_every_float_field_refuses_nan_and_inf():
    fields = float_fields()
    assert len(fields) >= 30 and ('train.stages.0.lr', 'float') in fields and ('train.betas', 'tuple') in fields, fields
    for key, kind in fields:
        bad = ['nan', 'inf', '-inf', '1e999'] if kind == 'float' else ['(0.5, 1e999)']
        for v in bad:
            shown = repr(float(v)) if kind == 'float' else '(0.5, inf)'
            one_line_error(rf_ref('config', f'{key}={v}'), f'{key}={shown}', 'set it like')


def float_flags():
    "(command, flag) of every flag whose value is a number with a fraction."
    from rf_ref.cli import build_parser, finite_float, positive_float
    commands = build_parser()._subparsers._group_actions[0].choices
    flags = [(c, a.option_strings[0], a.type) for c, p in commands.items() for a in p._actions if a.type in (float, finite_float, positive_float)]
    assert not [f for f in flags if f[2] is float], 'a float flag that takes nan: use cli.finite_float'
    return [(c, f) for c, f, _ in flags]


def test_every_float_flag_refuses_nan_and_inf(tmp_path):
    flags = float_flags()
    assert {('sample', '--w-pix'), ('sample', '--w-rep'), ('plan', '--generation'), ('demo', '--max-minutes')} <= set(flags), flags
    for command, flag in flags:
        for v in ('nan', 'inf', '-inf'):
            one_line_error(rf_ref(command, f'{flag}={v}', cwd=tmp_path), f'argument {flag}: {v} is not a finite number')
    assert not os.listdir(tmp_path)   # the default outputs/ and runs/ would land here


ROWS = [  # (command line, what the error line says, a path that must not exist afterwards); $T is the test's folder
    (['train', 'train.stages.0.lr=inf', '--out', '$T/run'], ['train.stages.0.lr=inf is not a finite number', 'train.stages.0.lr=0.001'], '$T/run'),
    (['config', 'train.betas=(0.9, 1e999)'], ['train.betas=(0.9, inf) holds NaN or inf', 'train.betas=(0.9, 0.95)'], ''),
    (['train', 'train.stages=[1]', '--out', '$T/run'], ['train.stages=[1] is not a tuple of StageConfig', 'train.stages.0.steps=100'], '$T/run'),
    (['config', 'train.max_loss_ratio=1'], ['train.max_loss_ratio=1.0 must be > 1', 'train.max_loss_ratio=100.0'], ''),
    (['config', 'train.dist_timeout=0'], ['train.dist_timeout=0.0 must be > 0', 'train.dist_timeout=300.0'], ''),
    (['config', 'train.batch_size=1e999'], ["train.batch_size='1e999' is not an integer"], ''),
    (['train', '--device', 'cpu', '--out', '$T/run', 'data.tokenizer=$T/notes.txt'] + TINY,
     ['$T/notes.txt is not a Hugging Face tokenizer.json', "data.tokenizer='bytes'"], '$T/run'),
    (['sample', '--ckpt', 'data/rf_shapes-tiny', '--w-pix', 'inf', '--out', '$T/x.png'] + SAMPLE, ['argument --w-pix: inf is not a finite number'], '$T/x.png'),
    (['sample', '--ckpt', 'data/rf_shapes-tiny', '--w-rep', 'nan', '--out', '$T/x.png'] + SAMPLE, ['argument --w-rep: nan is not a finite number'], '$T/x.png'),
    (['plan', '--generation', 'nan'], ['argument --generation: nan is not a finite number'], ''),
]


@pytest.mark.parametrize('argv,says,absent', ROWS, ids=[' '.join(r[0][:2]) for r in ROWS])
def test_bad_value_rows(tmp_path, argv, says, absent):
    (tmp_path / 'notes.txt').write_text('hello, not a tokenizer')
    t = lambda s: s.replace('$T', str(tmp_path))
    one_line_error(rf_ref(*map(t, argv)), *map(t, says))
    assert not absent or not os.path.exists(t(absent))


# ---- damaged checkpoints and judges, through the commands

def test_manifest_entry_without_bytes(run, tmp_path):
    d = damaged(run, tmp_path, edit_json('manifest.json', lambda m: m['files']['ema.safetensors'].pop('bytes')), fix_manifest=False)
    one_line_error(rf_ref('sample', '--ckpt', d, '--out', tmp_path / 'x.png', *SAMPLE),
                   f"{d}/manifest.json is damaged: its entry 'ema.safetensors' is not a file of the folder")
    assert not (tmp_path / 'x.png').exists()


def test_config_that_parses_but_fails_validation(run, tmp_path):
    d = damaged(run, tmp_path, edit_json('config.json', lambda c: c['mot'].update(width=0)))
    one_line_error(rf_ref('sample', '--ckpt', d, '--out', tmp_path / 'x.png', *SAMPLE), f'{d}/config.json: mot.width=0 must be >= 1')
    from rf_ref.core.checkpoint import CheckpointError, load_config
    with pytest.raises(CheckpointError): load_config(str(d))


SHARDED = """import sys
from rf_ref.core.checkpoint import load_config
from rf_ref.method.sample import load_model
from rf_ref.scale.dcp import save_sharded
from rf_ref.core.ema import EMA
model = load_model(sys.argv[1], ema=False, device='cpu')
save_sharded(sys.argv[2] + '/ckpt', 2, model, ema=EMA(model), state={'history': []})"""


def test_sharded_run_samples_from_its_export_or_says_how(run, tmp_path):
    sharded = tmp_path / 'sharded'
    r = subprocess.run([sys.executable, '-c', SHARDED, str(run), str(sharded)], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(sharded / 'ckpt' / 'step-00000002' / 'manifest.json'))['kind'] == 'sharded'
    one_line_error(rf_ref('sample', '--ckpt', sharded, '--out', tmp_path / 'x.png', *SAMPLE),
                   f'{sharded}/export does not exist: export it with rf_ref.scale.dcp.export_sharded', f'--ckpt {sharded}/export')
    assert not (tmp_path / 'x.png').exists()
    r = subprocess.run([sys.executable, '-c', f'from rf_ref.scale.dcp import export_sharded; export_sharded({str(sharded)!r}, '
                        f'{str(sharded / "export")!r})'], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    r = rf_ref('sample', '--ckpt', sharded, '--out', tmp_path / 'x.png', *SAMPLE)
    assert r.returncode == 0 and (tmp_path / 'x.png').stat().st_size > 1000, r.stderr[-3000:]


def test_judge_truncated_or_of_another_model(run, tmp_path):
    from rf_ref.evaluation.judge import default_judge_path
    cut = tmp_path / 'judge.safetensors'; cut.write_bytes(default_judge_path().read_bytes()[:5000])
    one_line_error(rf_ref('eval', '--noise', '--judge', cut, '--out', tmp_path / 'ev' / 'r.json', *EVAL),
                   f'judge weights {cut} cannot be read', 'rf-ref train-judge')
    other = run / 'ckpt' / 'step-00000002' / 'ema.safetensors'
    line = one_line_error(rf_ref('eval', '--noise', '--judge', other, '--out', tmp_path / 'ev' / 'r.json', *EVAL),
                          f"{other} holds", "not the ShapesEval judge's weights", 'rf-ref train-judge')
    assert len(line) < 400, len(line)
    assert not (tmp_path / 'ev').exists()


def test_eval_out_rerun_replaces_the_report(tmp_path):
    out = tmp_path / 'report.json'
    for seed in ('0', '1'):
        r = rf_ref('eval', '--noise', '--seed', seed, '--out', out, *EVAL); assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(out))['shapes_eval']['config']['seed'] == 1 and os.listdir(tmp_path) == ['report.json']
    one_line_error(rf_ref('eval', '--noise', '--out', tmp_path, *EVAL), f'--out {tmp_path} is a folder: give a file path')


# ---- load_train_state: every damage is a CheckpointError naming the file

def _moment(fn):
    "A change to the first non-square 2-D AdamW moment of state.safetensors: fn(tensor) -> its replacement."
    from safetensors.torch import load_file, save_file
    def change(d):
        t = load_file(d / 'state.safetensors')
        k = next(k for k, v in t.items() if k.startswith('opt.') and v.ndim == 2 and v.shape[0] != v.shape[1])
        t[k] = fn(t[k]).contiguous(); save_file(t, d / 'state.safetensors')
    return change


def _drop_rng(d):
    from safetensors.torch import load_file, save_file
    t = load_file(d / 'state.safetensors'); del t['rng.cpu']; save_file(t, d / 'state.safetensors')


def _move_param(st):   # one parameter moved from the first group to the second: counts no longer match the model's
    st['param_groups'][1]['params'].append(st['param_groups'][0]['params'].pop())


STATE = [  # (damage, the file named, what the message says)
    (lambda d: (d / 'state.json').write_text('{"step": 2, "hist'), 'state.json', 'is not valid JSON'),
    (lambda d: (d / 'state.json').write_text('[1, 2]'), 'state.json', 'is not an object'),
    (edit_json('state.json', lambda st: st.pop('param_groups')), 'state.json', "has no 'param_groups'"),
    (edit_json('state.json', lambda st: st.update(history={'step': 1})), 'state.json', 'history that is not a list of records'),
    (edit_json('state.json', lambda st: st.update(step=-3)), 'state.json', 'step=-3, not an integer >= 0'),
    (edit_json('state.json', lambda st: st.update(step=2.5)), 'state.json', 'step=2.5, not an integer >= 0'),
    (edit_json('state.json', lambda st: st.update(step=True)), 'state.json', 'step=True, not an integer >= 0'),
    (edit_json('state.json', lambda st: st.update(step='2')), 'state.json', "step='2', not an integer >= 0"),
    (edit_json('state.json', lambda st: st['param_groups'].pop()), 'state.json', 'parameter groups of'),
    (edit_json('state.json', _move_param), 'state.json', "but the model's optimizer has"),
    (edit_json('state.json', lambda st: st['param_groups'][0].update(params='all')), 'state.json', 'not groups of parameter indices'),
    (edit_json('state.json', lambda st: st['param_groups'][0].update(lr=float('inf'))), 'state.json', 'lr=inf, not a finite number'),
    (lambda d: open(d / 'state.safetensors', 'r+b').truncate(200), 'state.safetensors', 'cannot be read'),
    (lambda d: os.remove(d / 'state.safetensors'), 'state.safetensors', 'not found'),
    (_drop_rng, 'state.safetensors', 'has no rng.cpu'),
    (_moment(lambda t: t[:, :-1]), 'state.safetensors', 'but its parameter is'),
    (_moment(lambda t: t.t()), 'state.safetensors', 'but its parameter is'),
    (_moment(lambda t: torch.full_like(t, float('nan'))), 'state.safetensors', 'holds NaN or inf in the optimizer state'),
]


def _fresh(ckpt):
    from rf_ref.core.checkpoint import load_config
    from rf_ref.method.model import RFModel
    from rf_ref.method.train import make_optimizer
    cfg = load_config(str(ckpt)); model = RFModel(cfg)
    return model, RFModel(cfg), make_optimizer(model, cfg)


def test_load_train_state_intact_loads(run):
    from rf_ref.core.checkpoint import load_train_state
    ck = run / 'ckpt' / 'step-00000002'; model, ema, opt = _fresh(ck)
    st = load_train_state(str(ck), model, ema, optimizer=opt); opt.load_state_dict(st['optimizer'])
    assert st['step'] == 2 and [r['step'] for r in st['history']] == [1, 2]


@pytest.mark.parametrize('change,file,says', STATE, ids=[s for _, _, s in STATE])
def test_load_train_state_damage_is_a_checkpoint_error(run, tmp_path, change, file, says):
    from rf_ref.core.checkpoint import CheckpointError, find_checkpoint, load_train_state
    d = damaged(run, tmp_path, change)
    assert find_checkpoint(str(d)) == str(d)                      # past the manifest check: the loaders find the damage
    model, ema, opt = _fresh(d); before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as e: load_train_state(str(d), model, ema, optimizer=opt)
    msg = str(e.value)
    assert f'{d}/{file}' in msg and says in msg and '\n' not in msg and len(msg) < 400, msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # refused before any weight was copied


def test_load_train_state_without_the_optimizer_still_checks_shapes(run, tmp_path):
    "As `train.resume` calls it today: a moment that fits no parameter of the model is still refused."
    from rf_ref.core.checkpoint import CheckpointError, load_train_state
    d = damaged(run, tmp_path, _moment(lambda t: torch.zeros(3, 5, 7)))
    model, ema, _ = _fresh(d)
    with pytest.raises(CheckpointError, match='no parameter of the model has that shape'): load_train_state(str(d), model, ema)

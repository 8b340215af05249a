"""SIGKILL a real training process, mid-run and inside checkpoint writes, resume it, and compare with an uninterrupted run.

Kills inside a write are placed by `RF_REF_KILL_AT` (the checkpoint module SIGKILLs its own process right after the
named file of the named step is written, or right after the folder is renamed into place), so each lands in the
write every time, on any machine. One more kill is sent from outside at whatever step the run has reached."""
import json, os, signal, subprocess, time
from conftest import BIN

TINY = ['mot.depth=1', 'mot.width=64', 'mot.heads=2', 'mot.kv_heads=1', 'mot.ffn_hidden=128', 'encoder.depth=1',
        'encoder.width=32', 'encoder.heads=2', 'encoder.mlp_hidden=64', 'vq.codebook_size=32', 'encoder.pretrained=',
        'train.batch_size=8', 'data.n_train=64', 'train.warmup_steps=2', 'train.stages.0.steps=10', 'train.log_every=1',
        'train.ckpt_every=1', 'train.keep_last=2']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}


def train(args, kill_at=''):
    env = {**ENV, 'RF_REF_KILL_AT': kill_at} if kill_at else ENV
    return subprocess.run([str(BIN / 'rf-ref'), 'train', '--device', 'cpu', *args], capture_output=True, text=True, env=env)


def losses(run):
    "{step: (loss, fm, rep, lm)} from a run's metrics.jsonl; a step listed twice is an error."
    recs = [json.loads(l) for l in open(run / 'metrics.jsonl')]
    steps = [r['step'] for r in recs]
    assert steps == sorted(set(steps)), f'steps listed out of order or twice: {steps}'
    return {r['step']: (r['loss'], r['fm'], r['rep'], r['lm']) for r in recs}


def reached(run) -> int:
    "The last step in metrics.jsonl while a run writes it (a line being written does not count)."
    steps = [0]
    for line in open(run / 'metrics.jsonl'):
        try: steps.append(json.loads(line)['step'])
        except ValueError: pass
    return max(steps)


def test_sigkill_anywhere_then_resume_gives_the_same_run(tmp_path):
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    r = train(['--out', str(ref), *TINY]); assert r.returncode == 0, r.stderr[-2000:]
    want = losses(ref); assert sorted(want) == list(range(1, 11))

    # killed while writing step 3's weights: step 3 never appears, step 2 is the newest checkpoint
    r = train(['--out', str(run), *TINY], kill_at='step-00000003/model.safetensors')
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    names = sorted(os.listdir(run / 'ckpt'))
    assert 'step-00000003' not in names and 'step-00000002' in names and any('.tmp-' in n for n in names), names
    # resumed, then killed while writing step 6's optimizer state, then right after step 8's folder is in place
    for kill_at in ('step-00000006/state.safetensors', 'step-00000008/renamed'):
        r = train(['--resume', str(run)], kill_at=kill_at); assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert open(run / 'ckpt' / 'latest').read().strip() == 'step-00000007'   # the pointer lags; step 8 is complete
    # resumed once more and killed from outside at whatever step it has reached
    p = subprocess.Popen([str(BIN / 'rf-ref'), 'train', '--device', 'cpu', '--resume', str(run)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    give_up = time.monotonic() + 1800                                   # a hang guard only: any speed passes
    while p.poll() is None and reached(run) < 9 and time.monotonic() < give_up: time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()                             # (if the run already ended, nothing is lost)
    r = train(['--resume', str(run)]); assert r.returncode == 0, r.stderr[-2000:]

    assert losses(run) == want                                          # bit-identical to the run never interrupted
    names = sorted(os.listdir(run / 'ckpt'))
    assert names == ['latest', 'step-00000009', 'step-00000010'], names  # keep_last=2, no leftovers of killed saves

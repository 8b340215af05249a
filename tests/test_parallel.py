"""`rf_ref.scale.parallel` and `rf_ref.scale.dcp` on two CPU processes joined by gloo: FSDP2 steps equal one process on the global
batch (HSDP too), a model built on meta draws distinct shards, sharded checkpoints load on two ranks and on one and
survive a save killed by SIGKILL; activation checkpointing and compile on one rank."""
import copy, json, os
from pathlib import Path
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ranks import spawn

SHARDS = Path(__file__).resolve().parent / 'assets' / 'parallel_shards.json'   # the parallel notebook's two-rank table
# dense pools (no MoE load balancing, which is per rank by design); R dropped at p = 0.5 so some step leaves a rank
# without R targets; warmup of one step so the learning rate is the stage's from the start
OVERRIDES = ['mot.depth=1', 'encoder.depth=1', 'encoder.pretrained=', 'data.understanding_fraction=0.5',
             'model.p_drop_rep=0.5', 'train.warmup_steps=1']
STEPS, SAVED = 5, 3       # steps trained; the step whose checkpoint is saved (and loaded back)


def _setup():
    "The tiny config and the global batches of STEPS steps: 8 examples each, 4 generation and 4 understanding."
    from rf_ref.core.presets import get_config
    from rf_ref.data.datasets import build_dataset, collate, load_tokenizer
    cfg = get_config('shapes-tiny', OVERRIDES)
    tok, data = load_tokenizer(cfg.data.tokenizer), build_dataset(cfg.data)
    return cfg, [collate([data[i] for i in range(8 * s, 8 * s + 8)], tok, cfg.n_rep_tokens, cfg.n_pixel_tokens,
                         cfg.n_visual_tokens, cfg.data.max_text_len, understanding_fraction=0.5) for s in range(STEPS)]


def _full(t):
    "A detached copy of a tensor, gathered whole if it is a DTensor (a collective: every rank must call it)."
    return (t.full_tensor() if hasattr(t, 'full_tensor') else t).detach().clone()


def _train(model, ema, opt, cfg, batches, steps, rank=0, world=1) -> list:
    "rf_ref.method.train.train_step's update on this rank's share of each global batch: schedule, clip, AdamW, both EMAs."
    from rf_ref.scale.parallel import global_losses, split_batches
    from rf_ref.method.train import lr_at, ema_decay_at
    records = []
    for step in steps:
        for g in opt.param_groups: g['lr'] = lr_at(cfg, step) * g['lr_mult']
        out = global_losses(model, split_batches(batches[step], rank, world), seed=cfg.train.seed, step=step)
        opt.zero_grad(set_to_none=True)
        out['loss'].backward()
        norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.train.grad_clip)
        opt.step()
        ema.update(model, ema_decay_at(cfg, step))
        model.target_encoder.update(model.encoder, cfg.encoder.ema_decay)
        records.append({k: float(out[k].detach()) for k in ('loss', 'lm', 'rep', 'fm', 'vq_usage')} | {'grad_norm': float(_full(norm))})
    return records


def _state(model, ema, opt) -> dict:
    "Whole tensors of the weights, the EMA and the AdamW state by parameter name (collective)."
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, StateDictOptions
    optim = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True))
    return {'model': {k: _full(v) for k, v in model.state_dict().items()},
            'ema': {k: _full(v) for k, v in ema.module.state_dict().items()},
            'optim': {n: {k: _full(v) for k, v in s.items()} for n, s in optim['state'].items()}}


def _worker(rank: int, world: int, root: str, out):
    from rf_ref.scale.dcp import load_sharded, save_sharded
    from rf_ref.core.ema import EMA
    from rf_ref.method.model import RFModel
    from rf_ref.scale.parallel import global_losses, make_mesh, materialize_parallel, parallelize, shard_table, split_batches
    from rf_ref.scale.build import build_model
    from rf_ref.method.train import make_optimizer
    cfg, batches = _setup()
    # the run: built eagerly (as one process would), sharded, float32 so it can equal one process
    torch.manual_seed(0); model = RFModel(cfg); ema = EMA(model)
    parallelize(model, ac='full', param_dtype=torch.float32, ema=ema)
    opt = make_optimizer(model, cfg)
    history = _train(model, ema, opt, cfg, batches, range(SAVED), rank, world)
    save_sharded(root, SAVED, model, opt, ema, {'history': history})
    saved = _state(model, ema, opt)
    # a second model built on meta, parallelized, materialized (distinct shards), then loaded on the same two ranks
    lazy = build_model(cfg); lazy_ema = EMA(lazy)
    parallelize(lazy, param_dtype=torch.float32, ema=lazy_ema)
    materialize_parallel(lazy, seed=0, ema=lazy_ema)
    qkv = _full(lazy.backbone.blocks[0].attention.qkv.weight)
    table = shard_table(lazy)
    lazy_opt = make_optimizer(lazy, cfg)
    loaded_step = load_sharded(root, lazy, lazy_opt, lazy_ema)['step']
    loaded = _state(lazy, lazy_ema, lazy_opt)
    history += _train(model, ema, opt, cfg, batches, range(SAVED, STEPS), rank, world)
    resumed = _train(lazy, lazy_ema, lazy_opt, cfg, batches, range(SAVED, STEPS), rank, world)
    final = _state(model, ema, opt)
    # HSDP: 2 replicas x 1 shard, from the same start
    torch.manual_seed(0); hybrid = RFModel(cfg); hybrid_ema = EMA(hybrid)
    parallelize(hybrid, make_mesh(replicas=2), param_dtype=torch.float32, ema=hybrid_ema)
    hsdp = _train(hybrid, hybrid_ema, make_optimizer(hybrid, cfg), cfg, batches, range(2), rank, world)
    placements = str(hybrid.backbone.blocks[0].attention.qkv.weight.placements)
    try:   # rank 1 without understanding rows: refused on both ranks before any collective could hang
        global_losses(model, {**split_batches(batches[0], rank, world), **({'understanding': None} if rank else {})})
        mismatch = ''
    except ValueError as e: mismatch = str(e)
    result = dict(table=table, loaded_step=loaded_step, resumed=resumed, hsdp=hsdp, placements=placements,
                  mismatch=mismatch, same_shards=torch.equal(*qkv.chunk(2)),
                  **(dict(history=history, saved=saved, loaded=loaded, final=final) if rank == 0 else {}))
    out[rank] = result
    os.environ['RF_REF_KILL_AT'] = f'step-{STEPS:08d}/saved'   # both ranks die after writing, before the rename
    save_sharded(root, STEPS, model, opt, ema)


def _assert_same(a: dict, b: dict, what: str):
    assert a.keys() == b.keys(), (what, a.keys() ^ b.keys())
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'{what}: {len(differ)} tensors differ, e.g. {differ[:3]}'


def _max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


def test_two_ranks(tmp_path):
    from rf_ref.method.sample import load_model
    from rf_ref.scale.dcp import export_sharded, load_sharded, save_sharded
    from rf_ref.core.ema import EMA
    from rf_ref.method.model import RFModel
    from rf_ref.scale.parallel import example_noise, split_batches
    from rf_ref.method.train import make_optimizer
    from torch.distributed.checkpoint.state_dict import get_state_dict
    root = str(tmp_path / 'ckpt')
    with mp.Manager() as manager:
        results = manager.dict()
        with pytest.raises(mp.ProcessExitedException, match='SIGKILL'):
            spawn(_worker, root, results)
        r0, r1 = copy.deepcopy(results[0]), copy.deepcopy(results[1])
    cfg, batches = _setup()
    # one process, the whole global batch of each step
    torch.manual_seed(0); model = RFModel(cfg); ema = EMA(model); opt = make_optimizer(model, cfg)
    reference = _train(model, ema, opt, cfg, batches, range(STEPS))
    for ours, theirs in zip(r0['history'], reference):
        for k in ('loss', 'lm', 'rep', 'fm', 'vq_usage'): assert abs(ours[k] - theirs[k]) < 1e-5, (k, ours, theirs)
        assert abs(ours['grad_norm'] / theirs['grad_norm'] - 1) < 1e-5, (ours, theirs)
    assert _max_difference(r0['final']['model'], model.state_dict()) < 1e-5
    assert _max_difference(r0['final']['ema'], ema.module.state_dict()) < 1e-5
    for ours, theirs in zip(r0['hsdp'], reference): assert abs(ours['loss'] - theirs['loss']) < 1e-5, (ours, theirs)
    assert r0['placements'] == '(Replicate(), Shard(dim=0))', r0['placements']
    # some step left one rank without R targets while the other had some (the heads' zero-gradient path ran)
    kept = [[int((~example_noise(model, split_batches(b, r, 2)['generation'], 2 * r, cfg.train.seed, s)['drop_rep']).sum())
             for r in (0, 1)] for s, b in enumerate(batches)]
    assert any(min(k) == 0 < max(k) for k in kept), kept
    assert 'ranks hold different kinds of batches' in r0['mismatch'] and r0['mismatch'] == r1['mismatch'], r0['mismatch']
    # meta-built, parallelized, materialized: the ranks drew different shards
    assert not r0['same_shards'] and not r1['same_shards']
    # the checkpoint saved on two ranks loads on two ranks: exactly, and the run goes on alike
    assert r0['loaded_step'] == r1['loaded_step'] == SAVED
    for part in ('model', 'ema'): _assert_same(r0['loaded'][part], r0['saved'][part], part)
    for name, state in r0['saved']['optim'].items(): _assert_same(r0['loaded']['optim'][name], state, f'AdamW state of {name}')
    assert r0['resumed'] == r0['history'][SAVED:], (r0['resumed'], r0['history'][SAVED:])
    # ... and on one process into a plain model; the killed save left it the newest
    assert sorted(os.listdir(root)) == [f'.step-{STEPS:08d}.tmp', 'latest', f'step-{SAVED:08d}'], os.listdir(root)
    torch.manual_seed(1); plain = RFModel(cfg); plain_ema = EMA(plain); plain_opt = make_optimizer(plain, cfg, fused=False)  # as sharded
    state = load_sharded(root, plain, plain_opt, plain_ema)
    assert state['step'] == SAVED and state['history'] == r0['history'][:SAVED], state
    _assert_same(plain.state_dict(), r0['saved']['model'], 'weights')
    _assert_same(plain_ema.module.state_dict(), r0['saved']['ema'], 'EMA')
    moments = get_state_dict(plain, plain_opt)[1]['state']
    assert moments.keys() == r0['saved']['optim'].keys()
    for name, state in moments.items(): _assert_same(state, r0['saved']['optim'][name], f'AdamW state of {name}')
    on_one = _train(plain, plain_ema, plain_opt, cfg, batches, range(SAVED, STEPS))
    for ours, theirs in zip(on_one, r0['history'][SAVED:]): assert abs(ours['loss'] - theirs['loss']) < 1e-5, (ours, theirs)
    # the export reads as a sampling checkpoint; the next save clears the killed one's folder
    sampler = load_model(export_sharded(root, str(tmp_path / 'export')), device='cpu')
    _assert_same(sampler.state_dict(), r0['saved']['ema'], 'exported EMA')
    save_sharded(root, STEPS + 1, plain, plain_opt, plain_ema)
    assert sorted(os.listdir(root)) == ['latest', f'step-{SAVED:08d}', f'step-{STEPS + 1:08d}'], os.listdir(root)
    # the notebook's stored table is what two ranks hold now
    tables = [r0['table'], r1['table']]
    if os.environ.get('RF_REF_UPDATE_SHARDS'):
        ranks = ',\n'.join('[\n' + ',\n'.join(json.dumps(row) for row in t) + '\n]' for t in tables)   # a row a line
        SHARDS.write_text(f'{{"world": 2, "overrides": {json.dumps(OVERRIDES)}, "ranks": [\n{ranks}\n]}}\n')
    stored = json.loads(SHARDS.read_text())
    assert stored['ranks'] == tables and stored['overrides'] == OVERRIDES, \
        f'{SHARDS} is out of date: regenerate it with RF_REF_UPDATE_SHARDS=1 pytest tests/test_parallel.py'


@pytest.fixture
def one_rank(tmp_path):
    "A process group of one gloo rank, closed after the test."
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/rendezvous', rank=0, world_size=1)
    try: yield
    finally: dist.destroy_process_group()


def _losses_and_grads(model, batches) -> tuple:
    from rf_ref.scale.parallel import global_losses
    out = global_losses(model, batches, seed=1)
    out['loss'].backward()
    return out['loss'].item(), {n: _full(p.grad) for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('ac,compile', [('full', False), ('selective', False), ('selective', {'backend': 'aot_eager'})])
def test_checkpointing_and_compile(one_rank, ac, compile):
    "The parallelized model with activation checkpointing (and compiled blocks) gives the loss and gradients of ac='none'."
    from rf_ref.method.model import RFModel
    from rf_ref.scale.parallel import parallelize
    cfg, batches = _setup()
    torch.manual_seed(0); model = RFModel(cfg)
    want = _losses_and_grads(parallelize(copy.deepcopy(model), ac='none', param_dtype=torch.float32), batches[0])
    got = _losses_and_grads(parallelize(copy.deepcopy(model), ac=ac, compile=compile, param_dtype=torch.float32), batches[0])
    assert got[0] == want[0], (got[0], want[0])
    _assert_same(got[1], want[1], f'gradients with ac={ac!r}')


def test_mesh_needs_a_process_group():
    from rf_ref.scale.parallel import make_mesh
    with pytest.raises(RuntimeError, match='needs a process group'): make_mesh()


def test_clear_errors(one_rank, tmp_path):
    from rf_ref.scale.dcp import find_sharded, load_sharded, save_sharded
    from rf_ref.core.checkpoint import CheckpointError
    from rf_ref.method.model import RFModel
    from rf_ref.scale.parallel import make_mesh, parallelize, split_batches
    from rf_ref.method.train import make_optimizer
    cfg, batches = _setup()
    with pytest.raises(ValueError, match='replicas=3 does not divide the world of 1 ranks'): make_mesh(replicas=3)
    with pytest.raises(ValueError, match="ac='fast': use one of"): parallelize(RFModel(cfg), ac='fast')
    with pytest.raises(ValueError, match='not a multiple of the 3 ranks'): split_batches(batches[0], 0, 3)
    model = parallelize(RFModel(cfg))
    with pytest.raises(ValueError, match='already parallelized'): parallelize(model)
    with pytest.raises(CheckpointError, match='holds no checkpoint'): find_sharded(str(tmp_path))
    folder = save_sharded(str(tmp_path / 'ckpt'), 1, model)
    with pytest.raises(CheckpointError, match=r"holds \['model'\] but not \['optimizer'\]"):
        load_sharded(folder, model, make_optimizer(model, cfg))

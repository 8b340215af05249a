"""Expert parallelism (rf_ref.scale.expert_parallel) on gloo ranks against the same model without it:

- one forward and backward of a MoT backbone with MoE pools (top-2 of 4 experts), on 2 ranks with EP 2 and on 4 ranks
  with EP 2 and FSDP2 over the other 2, give the loss, L_aux and every parameter's gradient of the run without EP within
  1e-5; one rank has no token for one pool, so it takes part in that pool's exchange with zero rows; the same
  backbone with its pools' experts stacked (`stack_pools`, FSDP2 alone) gives the same loss and gradients;
- `rf-ref train --ep 2` under torchrun, 5 steps, on 2 and on 4 ranks: the losses and gradient norms of the same run
  without EP within 1e-5, and its exported weights within 1e-5 (absolute; AdamW's normalized steps carry the rounding);
  stopped at step 2 and resumed, the EP run repeats itself bit for bit.
"""
import glob, json, os, subprocess, sys
import torch
import torch.multiprocessing as mp
from ranks import spawn

TINY = ['mot.depth=1', 'encoder.depth=1', 'encoder.pretrained=', 'train.batch_size=8', 'data.understanding_fraction=0.5',
        'data.n_train=64', 'train.stages.0.steps=5', 'train.warmup_steps=2', 'train.log_every=1', 'train.ckpt_every=5',
        'train.keep_last=1', 'train.precision=fp32', 'mot.n_experts=4', 'mot.experts_per_token=2']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}


def _backbone(rank: int, world: int, ep: int, results, stack: bool = False):
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from rf_ref.core.presets import get_config
    from rf_ref.method.mot import MoTTransformer
    from rf_ref.scale.parallel import global_mean, make_mesh
    from rf_ref.scale.expert_parallel import expert_mesh, shard_experts
    cfg = get_config('shapes-tiny', ['mot.n_experts=4', 'mot.experts_per_token=2', 'mot.depth=2'])
    torch.manual_seed(0)
    model = MoTTransformer(cfg.mot)
    for block in model.blocks: block.stack_pools = stack          # the pools' experts in one grouped GEMM (no EP)
    with torch.no_grad():                                          # decisive routers: no near-tie that rounding could flip
        for block in model.blocks:
            for pool in block.pools: pool.router.weight.mul_(30)
    mesh, mp_policy = make_mesh(device_type='cpu'), MixedPrecisionPolicy(param_dtype=torch.float32)
    if ep > 1: assert shard_experts(model, expert_mesh(ep), mesh, mp_policy) == 2 * 3   # two layers of three pools
    for block in model.blocks: fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)
    model.global_aux = True                                        # as `parallelize` sets them
    for block in model.blocks: block.every_pool = True
    g = torch.Generator().manual_seed(rank)
    h = torch.randn(2, 12, cfg.mot.width, generator=g)
    modality = torch.tensor([0] * 4 + [2] * 4 + [3] * 4).repeat(2, 1)
    if rank == 1: modality[modality == 2] = 3                      # no R token here: the R pool exchanges zero rows
    out, aux = model(h, modality, torch.arange(12).expand(2, 12))
    target = torch.randn(out.shape, generator=g)                    # a loss whose gradient reaches every layer (RMSNorm's output
    means = global_mean({'out': (out * target).mean(), 'aux': aux}, {'out': out.numel(), 'aux': 1})   # squared would not)
    (means['out'] + means['aux']).backward()
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}
    if rank == 0: results['stacked' if stack else ep] = {'loss': float(means['out']), 'aux': float(means['aux']), 'grads': grads}


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def test_expert_parallel_backbone_equals_fsdp_alone():
    for world in (2, 4):
        results = mp.Manager().dict()
        for ep in (1, 2): spawn(_backbone, ep, results, world=world)
        spawn(_backbone, 1, results, True, world=world)
        plain, ep2 = results[1], results[2]
        assert abs(plain['loss'] - ep2['loss']) <= 1e-5 and abs(plain['aux'] - ep2['aux']) <= 1e-5, (world, plain, ep2)
        assert plain['aux'] > 0, plain
        assert set(plain['grads']) == set(ep2['grads'])
        worst = {n: _close(ep2['grads'][n], g) for n, g in plain['grads'].items()}
        assert max(worst.values()) <= 1e-5, (world, sorted(worst.items(), key=lambda kv: -kv[1])[:4])
        assert float(plain['grads']['blocks.0.pools.1.gate_up'].abs().sum()) > 0   # the R pool's experts learn
        stacked = results['stacked']                  # FSDP2 over the stacked pools: the same as pool by pool
        assert abs(stacked['loss'] - plain['loss']) <= 1e-6 and abs(stacked['aux'] - plain['aux']) <= 1e-6, (world, stacked, plain)
        assert max(_close(stacked['grads'][n], g) for n, g in plain['grads'].items()) <= 1e-5, world


def _train(out, ranks: int, *extra):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', str(ranks), '-m', 'rf_ref.cli',
           'train', '--device', 'cpu', '--out', str(out), *extra, *TINY]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(l) for l in open(out / 'metrics.jsonl')]


def _weights(run) -> dict:
    from safetensors.torch import load_file
    return {f'{os.path.basename(f)}:{k}': v for f in glob.glob(str(run / 'export' / '*.safetensors')) for k, v in load_file(f).items()}


def test_train_with_ep_equals_train_without(tmp_path):
    for ranks in (2, 4):                          # EP 2 alone, and EP 2 with FSDP2 over the other two ranks
        plain, ep = _train(tmp_path / f'plain{ranks}', ranks), _train(tmp_path / f'ep{ranks}', ranks, '--ep', '2')
        assert json.load(open(tmp_path / f'ep{ranks}' / 'ckpt' / 'step-00000005' / 'config.json'))['train']['ep'] == 2
        assert len(plain) == len(ep) == 5
        for a, b in zip(ep, plain):
            for k in ('loss', 'lm', 'rep', 'fm', 'aux'): assert abs(a[k] - b[k]) <= 1e-5, (ranks, k, a, b)
            assert abs(a['grad_norm'] / b['grad_norm'] - 1) <= 1e-5, (ranks, a['grad_norm'], b['grad_norm'])
        if ranks == 2:                            # stopped at step 2 and resumed: the experts' 2-D DTensors come back from DCP
            _train(tmp_path / 'stopped', 2, '--ep', '2', '--steps', '2', '--no-export', 'train.ckpt_every=2')
            r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2', '-m',
                                'rf_ref.cli', 'train', '--device', 'cpu', '--resume', str(tmp_path / 'stopped'), '--no-export'],
                               capture_output=True, text=True, env=ENV)
            assert r.returncode == 0, r.stderr[-3000:]
            resumed = [json.loads(l) for l in open(tmp_path / 'stopped' / 'metrics.jsonl')]
            assert [{k: x[k] for k in ('loss', 'aux', 'grad_norm')} for x in resumed] == \
                   [{k: x[k] for k in ('loss', 'aux', 'grad_norm')} for x in ep], (resumed, ep)    # bit for bit
        ours, theirs = _weights(tmp_path / f'ep{ranks}'), _weights(tmp_path / f'plain{ranks}')
        assert set(ours) == set(theirs) and any('gate_up' in k for k in ours)
        worst = max(float((ours[k] - v).abs().max()) for k, v in theirs.items() if v.is_floating_point())
        assert worst <= 1e-5, (ranks, worst)          # measured: 2.6e-07 on 2 ranks, 5.8e-07 on 4 (weights of about 0.05)

"""`rf_ref.scale.build.materialize` under FSDP2: each of two CPU processes (gloo) allocates only its local shard of a
model built on the meta device, and a forward and backward run on the sharded model."""
import torch
import torch.multiprocessing as mp
from ranks import spawn


def _worker(rank: int, world: int, results):
    from torch.distributed.fsdp import fully_shard
    from rf_ref.core.presets import get_config
    from rf_ref.scale.build import build_model, materialize
    cfg = get_config('shapes-tiny', ['mot.n_experts=4', 'mot.experts_per_token=2', 'encoder.pretrained='])
    model = build_model(cfg)
    for block in model.backbone.blocks: fully_shard(block)
    fully_shard(model.backbone)
    materialize(model)
    qkv = model.backbone.blocks[0].attention.qkv.weight
    experts = model.backbone.blocks[0].pools[2].gate_up
    torch.manual_seed(0)
    h = torch.randn(2, 8, cfg.mot.width)
    modality = torch.tensor([[0, 0, 2, 2, 3, 3, 3, 3]] * 2)
    out, aux = model.backbone(h, modality, torch.arange(8).expand(2, 8))
    (out.square().mean() + aux).backward()
    results[rank] = dict(full=tuple(qkv.shape), local=tuple(qkv.to_local().shape),
                         experts_local=tuple(experts.to_local().shape), experts_full=tuple(experts.shape),
                         meta=[n for n, t in model.state_dict().items() if t.is_meta],
                         loss=float(out.square().mean()), grad=tuple(qkv.grad.to_local().shape))


def test_materialize_allocates_local_shards():
    results = mp.Manager().dict()
    spawn(_worker, results)
    r0, r1 = results[0], results[1]
    for r in (r0, r1):
        assert r['meta'] == [], r['meta']
        assert r['local'] == (r['full'][0] // 2, r['full'][1]), r          # half of W_qkv's rows on each rank
        assert r['experts_local'] == (r['experts_full'][0] // 2, *r['experts_full'][1:]), r  # 2 of 4 experts
        assert r['grad'] == r['local'], r
    assert abs(r0['loss'] - r1['loss']) < 1e-6, (r0['loss'], r1['loss'])  # the same input gives the same output

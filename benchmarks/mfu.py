"""Tokens/s, MFU and peak memory of the paper's shapes at a reduced depth and expert count, trained on one device.

The backbone keeps Qwen3-30B-A3B's layer (width 2048, 32 query and 4 key/value heads of 128, experts of
width 768, top-8 routing, three pools) and the encoder DINOv3 ViT-H+/16's width; `--depth`, `--experts`
and `--encoder-depth` cut the model to a size one GPU trains (the defaults: 3.0B parameters, 0.6B of them the two vocabulary tables). Data
are Shapes scenes rendered at 256 px (16 px patches: 256 P and 64 R tokens per image), so nothing
downloads. It times `--steps` training steps after `--warmup` steps and prints, from one run:

- tokens/s (sequence tokens that are not padding) and model FLOPs/s, with the FLOPs per token of the
  planner (`rf_ref.method.plan`) for this batch's mix;
- MFU against `--peak-tflops` (H100/H200 SXM bf16 dense: 989);
- peak device memory against the planner's one-device prediction (weights, gradients, AdamW, EMA,
  activations without checkpointing) for the same token count.

    python benchmarks/mfu.py --device cuda                                   # bf16, the mid-size model
    python benchmarks/mfu.py --device cuda train.compile=true                # with compiled blocks
    python benchmarks/mfu.py --device cuda --moe loop                        # the per-expert loop instead of grouped GEMM
    python benchmarks/mfu.py --device cpu --tiny                             # a smoke run of the script on a CPU
"""
import argparse, time
from dataclasses import replace
import torch
from rf_ref.core.config import override
from rf_ref.core.presets import get_config
from rf_ref.core.checkpoint import default_device
from rf_ref.method.moe import MoE
from rf_ref.method.plan import Workload, count_params, plan
from rf_ref.method.train import Trainer, train_step


def mid_size(a) -> list:
    "Overrides of the `paper` preset: its layer shapes, fewer layers and experts, Shapes data at 256 px."
    o = [f'mot.depth={a.depth}', f'mot.n_experts={a.experts}', f'encoder.depth={a.encoder_depth}', 'data.dataset=shapes', 'data.packing=false',
         'data.tokenizer=words', 'data.max_text_len=40', 'data.n_train=2000', 'data.n_test=100',
         f'train.batch_size={a.batch_size}', f'train.precision={a.precision}']
    if a.tiny: o += ['mot.width=64', 'mot.heads=4', 'mot.kv_heads=2', 'mot.head_dim=16', 'mot.ffn_hidden=32',
                     'encoder.width=64', 'encoder.heads=4', 'encoder.mlp_hidden=128', 'data.image_size=64',
                     'mot.vocab_size=512', 'vq.codebook_size=64']
    return o


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default=None); ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--warmup', type=int, default=3); ap.add_argument('--batch-size', type=int, default=16)
    ap.add_argument('--depth', type=int, default=4); ap.add_argument('--experts', type=int, default=32)
    ap.add_argument('--encoder-depth', type=int, default=8); ap.add_argument('--precision', default='auto')
    ap.add_argument('--moe', default='auto', choices=('auto', 'grouped', 'loop'), help='expert path of every MoE pool')
    ap.add_argument('--peak-tflops', type=float, default=989.0); ap.add_argument('--tiny', action='store_true')
    ap.add_argument('overrides', nargs='*', help='more key=value overrides, e.g. train.compile=true')
    a = ap.parse_args()
    dev = default_device(a.device)
    paper = get_config('paper')
    joint = next(s for s in paper.train.stages if s.name == 'joint')     # the paper's stage 2: everything trains, at 256 px
    paper = replace(paper, train=replace(paper.train, stages=(replace(joint, steps=100_000, image_size=0),)))
    cfg = override(paper, mid_size(a) + a.overrides)
    tr = Trainer(cfg, '/tmp/rf_ref_mfu', dev)
    for m in tr.model.modules():
        if isinstance(m, MoE): m.impl = a.moe
    it = tr.batches(0)
    batches = [next(it) for _ in range(a.warmup + a.steps)]        # collated up front: the timing is the model's
    for b in batches[:a.warmup]: train_step(tr, b)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev)
    sync(); t0 = time.perf_counter()
    for b in batches[a.warmup:]: train_step(tr, b)
    sync(); dt = time.perf_counter() - t0
    timed = batches[a.warmup:]
    tokens = sum(int((v.modality != 4).sum()) for b in timed for v in b.values() if v is not None)   # 4: Modality.PAD
    per_step = tokens / a.steps
    gen = sum(len(b['generation']) for b in timed if b['generation'] is not None) / a.steps
    und = sum(len(b['understanding']) for b in timed if b['understanding'] is not None) / a.steps
    n_gen = cfg.n_rep_tokens + cfg.n_pixel_tokens + 24                # tokens of a generation row, about
    share = gen * n_gen / max(gen * n_gen + und * (cfg.n_visual_tokens + 20), 1)
    work = Workload(tokens=round(per_step), generation=share, understanding=1 - share, text=0.0)
    p = plan(cfg, 1, workload=work, peak_tflops=a.peak_tflops)
    flops = tokens / dt * p.flops_per_token
    params = sum(t for t, _ in count_params(cfg).values())
    print(f'device={dev} precision={cfg.train.precision} compile={cfg.train.compile} moe={a.moe} params={params / 1e9:.2f}B '
          f'(depth {cfg.mot.depth}, {cfg.mot.n_experts} experts top-{cfg.mot.experts_per_token}, encoder depth {cfg.encoder.depth})')
    print(f'{a.steps} steps of {per_step:,.0f} tokens ({gen:.1f} generation + {und:.1f} understanding rows): '
          f'{dt / a.steps * 1000:.0f} ms/step, {tokens / dt:,.0f} tokens/s, {flops / 1e12:.1f} TFLOP/s model FLOPs, '
          f'MFU {flops / (a.peak_tflops * 1e12):.1%} of {a.peak_tflops:g} TFLOP/s')
    predicted = p.total(checkpointing=False) - p.memory['gathered layer (bf16 x2 + fp32 grads)']   # one device gathers nothing
    if dev.type == 'cuda':
        print(f'peak memory {torch.cuda.max_memory_allocated(dev) / 1e9:.1f} GB; planner {predicted:.1f} GB '
              f'(weights, gradients, AdamW, EMA, activations without checkpointing)')
    else: print(f'planner memory {predicted:.2f} GB (peak device memory is measured on CUDA only)')


if __name__ == '__main__': main()

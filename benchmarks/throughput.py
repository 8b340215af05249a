"""Training samples/s and sampling images/s of a preset, measured in one run.

Usage: python benchmarks/throughput.py [--preset shapes-tiny] [--device cpu|cuda] [--steps 20] [--images 16]
Prints one line per measurement; record the results in BENCHMARKS.md with the hardware.
"""
import argparse, time
import torch
from rf_ref.core.presets import get_config
from rf_ref.core.checkpoint import default_device
from rf_ref.method.train import Trainer, train_step
from rf_ref.method.sample import generate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--preset', default='shapes-tiny'); ap.add_argument('--device', default=None)
    ap.add_argument('--steps', type=int, default=20); ap.add_argument('--images', type=int, default=16)
    ap.add_argument('overrides', nargs='*')
    a = ap.parse_args()
    dev = default_device(a.device)
    cfg = get_config(a.preset, a.overrides)
    tr = Trainer(cfg, '/tmp/rf_ref_bench', dev)
    it = tr.batches(0)
    batches = [next(it) for _ in range(a.steps + 3)]  # data collated up front: the timing is the model's
    for b in batches[:3]: train_step(tr, b)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)
    sync(); t0 = time.perf_counter()
    for b in batches[3:]: train_step(tr, b)
    sync(); dt = time.perf_counter() - t0
    n = sum(len(v) for b in batches[3:] for v in b.values() if v is not None)
    params = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    print(f'device={dev} threads={torch.get_num_threads()} preset={a.preset} params={params / 1e6:.2f}M '
          f'batch={cfg.train.batch_size} tokens/sample={cfg.data.max_text_len + cfg.n_rep_tokens + cfg.n_pixel_tokens + 2}')
    print(f'train: {n / dt:.1f} samples/s ({dt / a.steps * 1000:.0f} ms/step over {a.steps} steps)')
    prompts = ['a red circle', 'two squares', 'a blue triangle and a green circle', 'a circle left of a square'] * (a.images // 4)
    model = tr.ema.module.eval()
    generate(model, prompts[:4], tr.tok, generator=torch.Generator(dev).manual_seed(0))  # warm-up
    sync(); t0 = time.perf_counter()
    generate(model, prompts, tr.tok, generator=torch.Generator(dev).manual_seed(0))
    sync(); dt = time.perf_counter() - t0
    s = cfg.sample
    print(f'sample: {len(prompts) / dt:.2f} images/s (batch {len(prompts)}, {s.steps} {s.sampler} steps, '
          f'w_rep={s.w_rep} w_pix={s.w_pix}, R tokens by KV-cached top-{s.top_k})')


if __name__ == '__main__':
    main()

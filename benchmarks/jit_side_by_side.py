"""rf_ref's pixel-only training step against JiT's, at the same width, depth, heads, patch tokens and batch, in one process.

JiT (Li and He, "Back to Basics: Let Denoising Generative Models Denoise", 2025) is the pixel-space diffusion
transformer rf_ref's pixel path is closest to: x-prediction with a v-loss, as `rf_ref.method.flow`. Its code is
imported at run time from a folder the user points to (`--jit DIR`: a checkout of github.com/LTH14/JiT, whose
`model_jit.py`, `denoiser.py` and `util/model_util.py` it reads; JiT needs `einops`); none of it is part of rf_ref.

One step of each, alternately on the same thread settings: rf_ref's `train_step` of the `shapes-tiny` recipe with
`model.rf=false` (pixel-only: text tokens and noisy pixel patches through the MoT backbone; L_FM; AdamW, clipping,
the EMA) on generation batches of Shapes renders, and JiT's `Denoiser` loss on images of the same size with
class labels, its backward, AdamW and its two EMAs. Both models have `--width`, `--depth`, `--heads` and the
same patch grid (`--image` / `--patch`), and JiT's SwiGLU hidden width (2/3 of 4 x width) is rf_ref's.
JiT keeps its own conditioning (adaLN from the class and time, `--in-context` class tokens from a third of the
depth on, a 128-wide bottleneck patch embedding); rf_ref conditions on `data.max_text_len` text tokens in the
same sequence. JiT moves some tensors with `.cuda()`; without a GPU the script makes that a no-op while it runs.

`--compile`: rf_ref with `train.compile=true` (its blocks compiled) and JiT as its code comes (its blocks and
final layer carry `@torch.compile`; its compiled attention calls `.cuda()`, so this needs a GPU); without it both
run eager (`torch._dynamo.config.disable`). Prints ms per
step, samples/s, each model's loss over the timed steps, and the ratio rf_ref / JiT of the step times.

    python benchmarks/jit_side_by_side.py --jit ~/src/JiT                  # eager, torch's threads
    OMP_NUM_THREADS=1 python benchmarks/jit_side_by_side.py --jit ~/src/JiT --compile
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch starts its OpenMP runtime (see rf_ref.cli)
import argparse, contextlib, statistics, sys, time
from pathlib import Path
from types import SimpleNamespace
import torch


@contextlib.contextmanager
def tensors_stay_on_cpu():
    "JiT moves its rotary tables and attention bias with `.cuda()`; on a machine without a GPU `.cuda()` leaves them on the CPU."
    if torch.cuda.is_available(): yield; return
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try: yield
    finally: torch.Tensor.cuda = cuda


def jit_denoiser(folder: Path, a):
    "JiT's `Denoiser` around a JiT of the benchmark's shape, from the user's checkout."
    for need in ('model_jit.py', 'denoiser.py', 'util/model_util.py'):
        if not (folder / need).is_file(): sys.exit(f'--jit {folder}: no {need} there; point it at a checkout of github.com/LTH14/JiT')
    sys.path.insert(0, str(folder))
    try: import model_jit, denoiser
    except ImportError as e: sys.exit(f'JiT from {folder} does not import ({e}); it needs einops: pip install einops')
    model_jit.JiT_models['rf-bench'] = lambda **kw: model_jit.JiT(
        depth=a.depth, hidden_size=a.width, num_heads=a.heads, patch_size=a.patch, bottleneck_dim=128,
        in_context_len=a.in_context, in_context_start=a.depth // 3, **kw)
    args = SimpleNamespace(model='rf-bench', img_size=a.image, class_num=10, attn_dropout=0.0, proj_dropout=0.0,
                           label_drop_prob=0.1, P_mean=-0.8, P_std=0.8, t_eps=5e-2, noise_scale=1.0,
                           ema_decay1=0.9999, ema_decay2=0.9996, sampling_method='heun', num_sampling_steps=50,
                           cfg=1.0, interval_min=0.0, interval_max=1.0)
    d = denoiser.Denoiser(args)
    d.ema_params1 = [p.detach().clone() for p in d.parameters()]
    d.ema_params2 = [p.detach().clone() for p in d.parameters()]
    return d


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--jit', required=True, help='a checkout of github.com/LTH14/JiT')
    p.add_argument('--width', type=int, default=256); p.add_argument('--depth', type=int, default=6)
    p.add_argument('--heads', type=int, default=4); p.add_argument('--image', type=int, default=32)
    p.add_argument('--patch', type=int, default=4, help='pixel patch: (image / patch)^2 patch tokens (default 64)')
    p.add_argument('--batch', type=int, default=64); p.add_argument('--in-context', type=int, default=32)
    p.add_argument('--steps', type=int, default=10, help='timed steps of each'); p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--compile', action='store_true', help="both compiled: rf_ref's train.compile, JiT's own @torch.compile")
    a = p.parse_args()
    if a.compile and not torch.cuda.is_available():   # the compiler traces the real .cuda() inside JiT's compiled attention
        sys.exit("--compile needs a GPU: JiT's compiled attention calls .cuda() on a tensor it makes, which fails without one")
    with tensors_stay_on_cpu(): run(a)


def run(a):
    if a.width % a.heads or a.image % a.patch: sys.exit('--width must divide by --heads and --image by --patch')
    torch._dynamo.config.disable = not a.compile
    from rf_ref.core.presets import get_config
    from rf_ref.method.train import Trainer, train_step
    hidden = int(4 * a.width * 2 / 3)
    cfg = get_config('shapes-tiny', ['model.rf=false', 'data.understanding_fraction=0', f'train.batch_size={a.batch}',
                                     f'mot.width={a.width}', f'mot.depth={a.depth}', f'mot.heads={a.heads}', f'mot.kv_heads={a.heads}',
                                     f'mot.head_dim={a.width // a.heads}', f'mot.ffn_hidden={hidden}', f'data.image_size={a.image}',
                                     f'flow.patch_size={a.patch}', f'train.compile={str(a.compile).lower()}'])
    torch.manual_seed(0)
    tr = Trainer(cfg, '/tmp/rf_ref_jit_bench', torch.device('cpu'))
    it = tr.batches(0)
    batches = [next(it) for _ in range(a.warmup + a.steps)]
    jit = jit_denoiser(Path(a.jit).expanduser().resolve(), a).train()
    opt = torch.optim.AdamW(jit.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(a.batch, 3, a.image, a.image, generator=g) * 2 - 1 for _ in range(a.warmup + a.steps)]
    labels = [torch.randint(0, 10, (a.batch,), generator=g) for _ in range(a.warmup + a.steps)]

    def jit_step(i):
        loss = jit(images[i], labels[i]); opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); jit.update_ema()
        return float(loss)
    times, losses = {'rf_ref': [], 'JiT': []}, {'rf_ref': [], 'JiT': []}
    for i in range(a.warmup + a.steps):
        for name in times:                  # alternate, so that both see the same load
            start = time.perf_counter()
            loss = float(train_step(tr, batches[i])['fm']) if name == 'rf_ref' else jit_step(i)
            if i >= a.warmup: times[name].append(time.perf_counter() - start); losses[name].append(loss)
    count = lambda m: sum(q.numel() for q in m.parameters() if q.requires_grad) / 1e6
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}, '
          f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {"compiled" if a.compile else "eager"}')
    print(f'width {a.width}, depth {a.depth}, heads {a.heads}, {(a.image // a.patch) ** 2} patch tokens, batch {a.batch}; '
          f'trained parameters: rf_ref {count(tr.model):.2f}M (pixel-only, with the text tables), JiT {count(jit.net):.2f}M')
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    for k in times: print(f'{k:>7}: {ms[k]:.0f} ms/step, {1e3 * a.batch / ms[k]:.0f} samples/s, '
                          f'v-loss over the timed steps {losses[k][0]:.3f} -> {losses[k][-1]:.3f}')
    print(f'median of {a.steps} after {a.warmup} warm-up; ratio rf_ref / JiT (step time) = {ms["rf_ref"] / ms["JiT"]:.2f}')


if __name__ == '__main__':
    main()

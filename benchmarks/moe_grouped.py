"""Forward + backward time of one mixture-of-experts layer: the per-expert loop against the grouped GEMM.

The expert shape is the paper's (Qwen3-30B-A3B: width d=2048, expert hidden f=768). On CPU the
default is 16 experts, top-2, 256 tokens, float32 (the full 128 experts would not fit a small
machine's time); with `--device cuda` the default is the full layer: 128 experts, top-8, 8,192
tokens, bfloat16. One `MoE` module is timed with `impl='loop'` and `impl='grouped'` alternately
(same weights, same tokens), so that load from elsewhere on the machine hits both alike; each
timing is a forward and a backward of a fixed random loss. Medians after warm-up are compared, and
the two paths' outputs and gradients are checked to agree before timing.

    python benchmarks/moe_grouped.py                                   # CPU, 16 experts, top-2, 256 tokens
    python benchmarks/moe_grouped.py --device cuda                     # 128 experts, top-8, 8192 tokens, bf16
    python benchmarks/moe_grouped.py --experts 32 --tokens 512 --top-k 4
    python benchmarks/moe_grouped.py --precision bf16                  # float32 weights under bf16 autocast, as training

As in mot_vs_torch.py, waiting OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE unless set): spinning
waits on a loaded machine measure the load rather than the kernels.
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch starts its OpenMP runtime
import argparse, contextlib, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from rf_ref.method.moe import MoE, compute_operands, grouped_mm_unsupported

DEFAULTS = {'cpu': dict(experts=16, top_k=2, tokens=256, dtype='float32'),
            'cuda': dict(experts=128, top_k=8, tokens=8192, dtype='bfloat16')}


AMP = contextlib.nullcontext   # `--precision bf16`: bfloat16 autocast around every forward


def step(moe, x, g, impl, sync):
    "Seconds for one forward and backward with expert path `impl`."
    moe.impl = impl
    moe.zero_grad(set_to_none=True)
    x.grad = None
    sync(); start = time.perf_counter()
    with AMP(): y, logits = moe(x)
    (y * g).sum().backward()
    sync()
    return time.perf_counter() - start


def agreement(moe, x, g):
    "Largest relative difference, grouped against loop, over the output and the gradients of x, router, gate_up, down."
    results = {}
    for impl in ('grouped', 'loop'):
        step(moe, x, g, impl, lambda: None)
        moe.impl = impl
        with AMP(): y, _ = moe(x)
        results[impl] = [y.detach(), x.grad, moe.router.weight.grad, moe.gate_up.grad, moe.down.grad]
    return max(float((a.float() - b.float()).abs().max() / b.float().abs().max())
               for a, b in zip(results['grouped'], results['loop']))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--experts', type=int, default=None, help='e (default: 16 on cpu, 128 on cuda)')
    p.add_argument('--top-k', type=int, default=None, help='k (default: 2 on cpu, 8 on cuda)')
    p.add_argument('--tokens', type=int, default=None, help='s (default: 256 on cpu, 8192 on cuda)')
    p.add_argument('--dtype', default=None, choices=['float32', 'bfloat16', 'float16'],
                   help='default: float32 on cpu, bfloat16 on cuda')
    p.add_argument('--precision', default='', choices=['', 'bf16'],
                   help="bf16: float32 weights and tokens under bfloat16 autocast, as training runs (the experts' operands cast once)")
    p.add_argument('--width', type=int, default=2048, help='d (Qwen3-30B-A3B: 2048)')
    p.add_argument('--hidden', type=int, default=768, help='f of one expert (Qwen3-30B-A3B: 768)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps of each path')
    p.add_argument('--repeats', type=int, default=9, help='timed steps of each path')
    p.add_argument('--threads', type=int, default=0, help="torch threads; 0 keeps torch's default")
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type not in DEFAULTS: sys.exit(f'--device {a.device}: use cpu or cuda')
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit('--device cuda: no CUDA device is visible')
    for k, v in DEFAULTS[device.type].items():
        if getattr(a, k) is None: setattr(a, k, v)
    if not 1 <= a.top_k <= a.experts: sys.exit(f'--top-k {a.top_k} must be in [1, --experts {a.experts}]')
    if a.threads: torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    torch.manual_seed(0)
    moe = MoE(a.width, a.hidden, a.experts, a.top_k).to(device, dtype)
    x = torch.randn(a.tokens, a.width, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn(a.tokens, a.width, device=device, dtype=dtype)
    global AMP
    if a.precision == 'bf16':
        if a.dtype != 'float32': sys.exit(f'--precision bf16 autocasts float32 weights: leave --dtype at float32, not {a.dtype}')
        AMP = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    with AMP(): why = grouped_mm_unsupported(*compute_operands(x, moe.gate_up, moe.down))
    if why: sys.exit(f'the grouped GEMM cannot run here: {why}')

    with torch.no_grad():
        counts = torch.bincount(moe.router(x).topk(a.top_k).indices.flatten(), minlength=a.experts).tolist()
    where = (f'{torch.cuda.get_device_name(device)}' if device.type == 'cuda' else
             f'CPU, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ["OMP_WAIT_POLICY"]}, '
             f'load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
    print(f'torch {torch.__version__}, {where}')
    print(f'd={a.width} f={a.hidden} experts={a.experts} top-k={a.top_k} tokens={a.tokens} {a.dtype}{" under bf16 autocast" if a.precision else ""}; '
          f'rows per expert: min {min(counts)}, median {statistics.median(counts):g}, max {max(counts)}, '
          f'{sum(c == 0 for c in counts)} experts without tokens')
    print(f'grouped vs loop, largest relative difference (output and gradients): {agreement(moe, x, g):.1e}')

    times = {'loop': [], 'grouped': []}
    for i in range(a.warmup + a.repeats):
        for impl in times:  # alternate, so both see the same load
            t = step(moe, x, g, impl, sync)
            if i >= a.warmup: times[impl].append(t)
    loop, grouped = statistics.median(times['loop']), statistics.median(times['grouped'])
    print(f'forward + backward, median of {a.repeats} after {a.warmup} warm-up: '
          f'loop {1e3 * loop:.1f} ms, grouped {1e3 * grouped:.1f} ms')
    print(f'ratio loop / grouped = {loop / grouped:.2f}')


if __name__ == '__main__':
    main()

"""Forward + backward time of one MoT layer's three MoE pools: pool by pool against all pools' experts stacked.

Pool by pool, each pool's mixture runs its own two grouped GEMMs on its own tokens (three calls per matmul);
stacked (`mot.stack_pools`, the default), the three pools' experts are concatenated and every token's rows go
through one grouped GEMM per matmul (`rf_ref.method.moe.stacked_pools`). The expert shape is the paper's
(d=2048, f=768); on CPU the default is 16 experts per pool, top-2, 384 tokens in float32, and with
`--device cuda` the paper's 128 experts per pool, top-8, 8,192 tokens under bf16 autocast. The tokens are split
over the pools as in the joint stage's rows (`--shares`, default 0.2 understanding, 0.1 R, 0.7 pixel). The two
ways are timed alternately on the same weights and tokens, after checking that they agree.

    python benchmarks/moe_pools.py                          # CPU
    python benchmarks/moe_pools.py --device cuda            # 3 x 128 experts, top-8, 8192 tokens, bf16 autocast
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch starts its OpenMP runtime
import argparse, contextlib, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
from rf_ref.method.moe import MoE, stackable, stacked_pools

DEFAULTS = {'cpu': dict(experts=16, top_k=2, tokens=384), 'cuda': dict(experts=128, top_k=8, tokens=8192)}


def run(moes, x, pool, counts, stacked: bool, amp):
    "Output and the gradients of x and of every expert weight, for one forward and backward of a fixed loss."
    for q in moes: q.zero_grad(set_to_none=True)
    x.grad = None
    with amp():
        if stacked: y, _ = stacked_pools(moes, x, pool, counts)
        else: y = torch.cat([q(c)[0] for q, c in zip(moes, x.split(counts))])
    (y.float() * 1e-3).square().sum().backward()
    return [y.detach(), x.grad] + [w.grad for q in moes for w in (q.gate_up, q.down)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--experts', type=int, default=None, help='e per pool (default: 16 on cpu, 128 on cuda)')
    p.add_argument('--top-k', type=int, default=None, help='k (default: 2 on cpu, 8 on cuda)')
    p.add_argument('--tokens', type=int, default=None, help='s over the three pools (default: 384 on cpu, 8192 on cuda)')
    p.add_argument('--shares', default='0.2,0.1,0.7', help='the share of the tokens in each pool: understanding, R, pixel')
    p.add_argument('--width', type=int, default=2048, help='d (Qwen3-30B-A3B: 2048)')
    p.add_argument('--hidden', type=int, default=768, help='f of one expert (Qwen3-30B-A3B: 768)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps of each way')
    p.add_argument('--repeats', type=int, default=9, help='timed steps of each way')
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type not in DEFAULTS: sys.exit(f'--device {a.device}: use cpu or cuda')
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit('--device cuda: no CUDA device is visible')
    for k, v in DEFAULTS[device.type].items():
        if getattr(a, k) is None: setattr(a, k, v)
    shares = [float(s) for s in a.shares.split(',')]
    if len(shares) != 3 or min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
        sys.exit(f'--shares {a.shares}: give three shares of at least 0 that sum to 1, e.g. 0.2,0.1,0.7')
    counts = [round(s * a.tokens) for s in shares[:2]]; counts.append(a.tokens - sum(counts))
    amp = (lambda: torch.autocast('cuda', dtype=torch.bfloat16)) if device.type == 'cuda' else contextlib.nullcontext
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    torch.manual_seed(0)
    moes = [MoE(a.width, a.hidden, a.experts, a.top_k).to(device) for _ in range(3)]
    x = torch.randn(a.tokens, a.width, device=device, requires_grad=True)
    pool = torch.repeat_interleave(torch.arange(3, device=device), torch.tensor(counts, device=device))
    with amp():
        if not stackable(moes, x): sys.exit('the pools cannot be stacked here: the grouped GEMM does not run (see moe_grouped.py)')
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else \
        f'CPU, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores'
    print(f'torch {torch.__version__}, {where}; d={a.width} f={a.hidden}, 3 pools of {a.experts} experts, top-{a.top_k}, '
          f'tokens per pool {counts}{", bf16 autocast" if device.type == "cuda" else ", float32"}')
    ours, theirs = run(moes, x, pool, counts, True, amp), run(moes, x, pool, counts, False, amp)
    print('stacked vs pool by pool, largest relative difference (output and gradients): '
          f'{max(float((s - t).abs().max() / t.abs().max()) for s, t in zip(ours, theirs)):.1e}')
    times = {True: [], False: []}
    for i in range(a.warmup + a.repeats):
        for stacked in times:  # alternate, so both see the same load
            sync(); start = time.perf_counter(); run(moes, x, pool, counts, stacked, amp); sync()
            if i >= a.warmup: times[stacked].append(time.perf_counter() - start)
    stacked, by_pool = statistics.median(times[True]), statistics.median(times[False])
    print(f'forward + backward, median of {a.repeats} after {a.warmup} warm-up: pool by pool {1e3 * by_pool:.1f} ms, '
          f'stacked {1e3 * stacked:.1f} ms')
    print(f'ratio pool by pool / stacked = {by_pool / stacked:.2f}')


if __name__ == '__main__':
    main()

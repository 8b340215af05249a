"""AdamW's step on a preset's parameters: torch's default (a loop over parameters on CPU) against its fused kernel.

Usage: python benchmarks/optimizer_step.py [--preset shapes-tiny] [--steps 30] [--rounds 5]
The two optimizers step alternately, round after round, in one process; prints each one's median milliseconds a step
and the ratio, and checks that both made the same update. Record the results in BENCHMARKS.md with the hardware.
"""
import argparse, statistics, time
import torch
from rf_ref.core.presets import get_config
from rf_ref.method.model import RFModel
from rf_ref.method.train import make_optimizer


def timed(opt, steps):
    t0 = time.perf_counter()
    for _ in range(steps): opt.step()
    return (time.perf_counter() - t0) / steps * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--preset', default='shapes-tiny'); ap.add_argument('--steps', type=int, default=30)
    ap.add_argument('--rounds', type=int, default=5)
    a = ap.parse_args()
    cfg = get_config(a.preset, ['encoder.pretrained='])
    torch.manual_seed(0)
    models = {'default': RFModel(cfg), 'fused': RFModel(cfg)}
    models['fused'].load_state_dict(models['default'].state_dict())
    opts = {}
    for name, m in models.items():
        for p in m.parameters(): p.grad = torch.ones_like(p) * 1e-3
        opts[name] = make_optimizer(m, cfg)
    groups = opts['default'].param_groups
    for g in groups: g['fused'] = False           # torch's CPU default: the for-loop implementation
    times = {name: [] for name in opts}
    for name, o in opts.items(): timed(o, 3)      # warm-up
    for _ in range(a.rounds):
        for name, o in opts.items(): times[name].append(timed(o, a.steps))
    a_, b_ = ([p for p in models[n].parameters() if p.requires_grad] for n in ('default', 'fused'))
    diff = max(float((x - y).detach().abs().max()) for x, y in zip(a_, b_))
    n = sum(p.numel() for p in a_)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'preset={a.preset} params={n / 1e6:.2f}M threads={torch.get_num_threads()} rounds={a.rounds} x {a.steps} steps')
    print(f"AdamW step: default {med['default']:.2f} ms, fused {med['fused']:.2f} ms; "
          f"default / fused = {med['default'] / med['fused']:.2f}; largest weight difference {diff:.1e}")


if __name__ == '__main__':
    main()

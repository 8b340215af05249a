"""Compare the logged losses of two runs step by step: equal bit for bit, or where they first differ.

A refactor that must not change the numerics is checked by training the same preset with the same seed
before and after it, then:

    python benchmarks/compare_losses.py BEFORE/metrics.jsonl AFTER/metrics.jsonl --out losses.png

It prints how many steps and terms were compared and every mismatch (step, term, both values), writes a
plot of both curves and their difference, and exits 1 if anything differs.
"""
import argparse, json, sys

KEYS = ('loss', 'lm', 'rep', 'fm', 'grad_norm')


def read(path: str) -> list:
    "The records of a metrics.jsonl with a 'loss' (skipped steps left out)."
    with open(path) as f: return [r for r in map(json.loads, f) if 'loss' in r]


def compare(before: list, after: list, keys=KEYS) -> list:
    "(step, key, before, after) for every logged value that differs, steps matched by number."
    by_step = {r['step']: r for r in after}
    missing = [(r['step'], 'step', 'logged', 'missing') for r in before if r['step'] not in by_step]
    return missing + [(r['step'], k, r[k], by_step[r['step']][k]) for r in before if r['step'] in by_step
                      for k in keys if k in r and r[k] != by_step[r['step']].get(k)]


def plot(before: list, after: list, out: str, labels=('before', 'after')):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [r['step'] for r in before]
    for k in ('lm', 'rep', 'fm'):
        axs[0].plot(steps, [r[k] for r in before], label=f'{k} ({labels[0]})', lw=3, alpha=0.4)
        axs[0].plot([r['step'] for r in after], [r[k] for r in after], '--', label=f'{k} ({labels[1]})', lw=1)
    axs[0].set_xlabel('step'); axs[0].set_ylabel('loss'); axs[0].legend(fontsize=7); axs[0].set_title('the two runs, overlaid')
    by_step = {r['step']: r for r in after}
    for k in KEYS:
        axs[1].plot(steps, [abs(r[k] - by_step[r['step']][k]) if r['step'] in by_step else float('nan') for r in before], label=k)
    axs[1].set_xlabel('step'); axs[1].set_ylabel('|before - after|'); axs[1].legend(fontsize=7)
    axs[1].set_title('difference (0 everywhere: identical)')
    fig.tight_layout(); fig.savefig(out, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('before'); p.add_argument('after')
    p.add_argument('--out', default='', help='a PNG of both curves and their difference')
    a = p.parse_args(argv)
    before, after = read(a.before), read(a.after)
    if not before: sys.exit(f'{a.before} has no logged losses')
    diffs = compare(before, after)
    print(f'{len(before)} steps x {len(KEYS)} terms compared ({a.before} against {a.after}): '
          + ('identical, bit for bit' if not diffs else f'{len(diffs)} differ'))
    for d in diffs[:20]: print('  step {}: {} {!r} -> {!r}'.format(*d))
    if a.out: plot(before, after, a.out); print(f'plot written to {a.out}')
    sys.exit(1 if diffs else 0)


if __name__ == '__main__': main()

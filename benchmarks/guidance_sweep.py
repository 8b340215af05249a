"""ShapesEval of one checkpoint's EMA weights over a grid of sampling settings (guidance scales, top-k, steps).

Usage:
    python benchmarks/guidance_sweep.py --ckpt runs/curves/rf/ckpt --w-pix 1,1.5,2,3 --w-rep 1,2 [--prompts 10]
Prints one line per setting and a markdown table; the paper's values are w_rep = 2 and w_pix = 3.
"""
import argparse, itertools, json
import torch
from rf_ref.method.sample import load_generator
from rf_ref.evaluation.shapes_eval import ShapesEval
from rf_ref.evaluation.judge import load_judge


def floats(s): return [float(v) for v in s.split(',')]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--ckpt', required=True); ap.add_argument('--w-pix', type=floats, default=[3.0])
    ap.add_argument('--w-rep', type=floats, default=[2.0]); ap.add_argument('--top-k', type=floats, default=[20])
    ap.add_argument('--steps', type=floats, default=[25]); ap.add_argument('--sampler', default='euler', help='euler,heun')
    ap.add_argument('--temperature', type=floats, default=[1.0], help='R-token sampling temperature')
    ap.add_argument('--w-pix-rep', type=floats, default=[0.0], help='nested pixel guidance on R given T (0: single CFG)')
    ap.add_argument('--prompts', type=int, default=10)
    ap.add_argument('--images', type=int, default=4); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--json', default='')
    a = ap.parse_args()
    judge, rows = load_judge(), []
    grid = itertools.product(a.w_pix, a.w_rep, a.top_k, a.steps, a.sampler.split(','), a.temperature, a.w_pix_rep)
    for w_pix, w_rep, top_k, steps, sampler, temperature, w_pix_rep in grid:
        gen = load_generator(a.ckpt, device='cpu', seed=a.seed, w_pix=w_pix, w_rep=w_rep, top_k=int(top_k), steps=int(steps),
                             sampler=sampler, temperature=temperature, w_pix_rep=w_pix_rep)
        res = ShapesEval(a.prompts, a.images, 'test', a.seed).run(gen, judge, progress=False)
        rows.append({'w_pix': w_pix, 'w_rep': w_rep, 'top_k': int(top_k), 'steps': int(steps), 'sampler': sampler, 'temperature': temperature, 'w_pix_rep': w_pix_rep,
                     **res.to_dict()})
        print(f"w_pix={w_pix:g} w_rep={w_rep:g} top_k={int(top_k)} steps={int(steps)} {sampler} T={temperature:g} w_pix_rep={w_pix_rep:g}: overall {res.overall:.3f} "
              f"[{res.overall_ci[0]:.3f}, {res.overall_ci[1]:.3f}] " + ' '.join(f'{k[:6]}={v:.2f}' for k, v in res.scores.items()),
              flush=True)
    print('\n| w_pix | w_rep | top-k | steps | sampler | R temperature | w_pix_rep | overall | 95% CI |\n|' + ' --- |' * 9)
    for r in rows:
        print(f"| {r['w_pix']:g} | {r['w_rep']:g} | {r['top_k']} | {r['steps']} | {r['sampler']} | {r['temperature']:g} | {r['w_pix_rep']:g} | {r['overall']:.3f} | "
              f"[{r['overall_ci'][0]:.2f}, {r['overall_ci'][1]:.2f}] |")
    if a.json: json.dump(rows, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    torch.set_grad_enabled(False)
    main()

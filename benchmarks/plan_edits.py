"""Do the pixels follow an edited plan? The three edits of `rf_ref.evaluation.plan_edit`, judged on a trained checkpoint.

For each of N single-object test scenes (`plan_edit.edit_cases`): the true plan of its render, the image drawn from
it, and the images drawn from three edits of it with the same pixel noise and the same caption (the object moved
across 3/8 of the image with its edge cells, recoloured, and a second scene's object pasted in). The judge decides
each edit (`plan_edit.judge_edits`); the control judges the unedited image in the edited one's place.

    python benchmarks/plan_edits.py --ckpt runs/curves/r8-restart/ema_32000 --scenes 100 --out runs/edits/r8-restart-32000
"""
import argparse, json, os, sys, time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--ckpt', required=True); ap.add_argument('--scenes', type=int, default=100)
    ap.add_argument('--seed', type=int, default=0); ap.add_argument('--halo', type=int, default=1)
    ap.add_argument('--out', default='', help='write OUT.json (the rates) and OUT.png (the first 6 cases)')
    ap.add_argument('--sample', nargs='*', default=[], metavar='KEY=VALUE', help='SampleConfig fields, e.g. w_pix=3')
    a = ap.parse_args(argv)
    from rf_ref.method.sample import load_generator
    from rf_ref.evaluation.plan_edit import read_codes, edit_cases, judge_edits, show_edits
    t0 = time.perf_counter()
    gen = load_generator(a.ckpt, device='cpu', seed=a.seed, **dict(kv.split('=', 1) for kv in a.sample))
    book = read_codes(gen.model, 1500, a.seed)
    cases = edit_cases(gen.model, book, a.scenes, a.seed, a.halo)
    if not cases: sys.exit(f'no test scene of {a.ckpt} has a plan that holds its object: its codes do not localize objects')
    res = judge_edits(gen, cases, seed=a.seed + 1)
    report = dict(ckpt=a.ckpt, scenes=len(cases), seed=a.seed, halo=a.halo, sample=a.sample,
                  codes_for_objects=int((book.code_labels > 0).sum()), seconds=round(time.perf_counter() - t0), **res['rates'])
    print(json.dumps(report, indent=1))
    if a.out:
        os.makedirs(os.path.dirname(a.out) or '.', exist_ok=True)
        with open(a.out + '.json', 'w') as f: json.dump(report, f, indent=1)
        fig = show_edits(cases, res, book, gen.model.vq, n=6)
        fig.savefig(a.out + '.png', dpi=100)


if __name__ == '__main__':
    main()

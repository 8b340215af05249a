"""ShapesEval, understanding and FID of one run against generation examples seen: the learning curve that
judges every recipe decision (RESULTS.md, "Learning curves").

Train one run and evaluate its EMA weights at several points (it checkpoints at each point and resumes):
    python benchmarks/learning_curve.py train --name rf --examples 8000,16000,32000 [--preset shapes-tiny] [overrides ...]
    python benchmarks/learning_curve.py train --name pixel --examples 8000,16000,32000 model.rf=false
Plot several runs side by side, against examples seen and against training wall time:
    python benchmarks/learning_curve.py plot runs/curves/rf runs/curves/pixel --out results/curve.png
Each run folder gets curve.json (one record per point: examples, steps, train seconds, scores with 95%
intervals) and samples_<examples>.png (judged samples: green passed, red failed); with --plan each point also
logs the plan diagnostics of the plan notebook (rf_ref.evaluation.plan_eval.plan_report) under 'plan'.
"""
import argparse, json, math, os, platform, sys, time
import torch

CATS = ('single_object', 'two_objects', 'counting', 'colors', 'position', 'color_attr')


def generation_per_step(cfg) -> int:
    "Generation examples in one training step (the rest of the batch is understanding)."
    b = cfg.train.batch_size
    return b - round(b * cfg.data.understanding_fraction)


def evaluate_point(tr, out, examples, prompts, images, scenes, seed, w_pix=None, plan=False):
    "ShapesEval + understanding + FID (judge features) of the trainer's EMA weights; `plan`: also `plan_eval.plan_report`."
    import matplotlib.pyplot as plt
    from dataclasses import replace
    from rf_ref.evaluation.shapes_eval import ShapesEval, understanding_accuracy, show_judged, surplus_objects
    from rf_ref.evaluation.judge import load_judge
    from rf_ref.method.sample import RFGenerator
    model = tr.ema.module.eval()
    scfg = model.cfg.sample if w_pix is None else replace(model.cfg.sample, w_pix=w_pix)
    gen = RFGenerator(model, tr.tok, scfg, seed=seed)
    judge = load_judge()
    t0 = time.perf_counter()
    evaluation = ShapesEval(prompts, images, 'test', seed)
    res = evaluation.run(gen, judge, progress=False)
    fig = show_judged(res, n=32); fig.savefig(os.path.join(out, f'samples_{examples}.png'), dpi=110); plt.close(fig)
    if model.cfg.model.rf:  # the fixed demo prompts, each after its blueprint (codes in their learned colours)
        from rf_ref.experiments.demo import demo_prompts
        from rf_ref.method.sample import show_samples
        prompts12 = demo_prompts(); imgs = gen.generate(prompts12)
        fig = show_samples(imgs, prompts12, gen.last_rep, model.cfg.vq.codebook_size, ncols=8, vq=model.vq)
        fig.savefig(os.path.join(out, f'blueprints_{examples}.png'), dpi=110); plt.close(fig)
    und = understanding_accuracy(gen.answer, scenes, 'test', seed) if scenes else None
    extra = {}
    if plan and model.cfg.model.rf:   # the R-code probe and ShapesEval split into plan and rendering error
        from rf_ref.evaluation.plan_eval import plan_report
        extra['plan'] = plan_report(RFGenerator(model, tr.tok, scfg, seed=seed), judge, seed=seed)
    model.train()
    return {'shapeseval': res.to_dict(), 'clutter': surplus_objects(res), 'fid': evaluation.fid_to_renderer(res, judge, seed + 1), 'understanding': und,
            'eval_seconds': round(time.perf_counter() - t0, 1), **extra}


def open_run(a):
    "A curve run's folder, its curve.json record (read back when resuming) and its trainer (resumed from ckpt/ if there)."
    from rf_ref.core.presets import get_config
    from rf_ref.method.train import Trainer, resume
    from rf_ref.core.checkpoint import step_folders
    from rf_ref.core.runs import clear_run
    out = os.path.join(a.root, a.name); os.makedirs(out, exist_ok=True)
    path = os.path.join(out, 'curve.json')
    curve = json.load(open(path)) if os.path.exists(path) else {'name': a.name, 'preset': a.preset, 'overrides': a.overrides,
                                                             'seed': a.seed, 'points': [], 'train_seconds': 0.0,
                                                             'command': 'python ' + ' '.join(sys.argv)}
    ckpt = os.path.join(out, 'ckpt')
    if step_folders(ckpt):
        tr = resume(ckpt, a.device, out_dir=out); print(f'resumed {a.name} at step {tr.step}')
    else:
        clear_run(out)   # killed before its first checkpoint: only a log is left, nothing to resume
        tr = Trainer(get_config(a.preset, a.overrides + [f'train.seed={a.seed}']), out, a.device)
    return out, path, curve, ckpt, tr


def points_to_train(a, curve):
    "The requested points (generation examples) not in curve.json yet, in order."
    done = {p['examples'] for p in curve['points']}
    return [e for e in sorted(int(float(e)) for e in a.examples.split(',')) if e not in done]


def train_to(tr, examples, curve, ckpt, progress) -> bool:
    "Train until `examples` generation examples were seen, timed, then checkpoint; False if the run is already there."
    from rf_ref.method.train import fit, save
    target = math.ceil(examples / generation_per_step(tr.cfg))
    if target <= tr.step: return False
    t0 = time.perf_counter()
    fit(tr, target - tr.step, progress=progress, ckpt_every=10**9)
    curve['train_seconds'] += time.perf_counter() - t0
    save(tr, ckpt)
    return True


def cmd_train(a):
    from rf_ref.method.sample import export_checkpoint
    out, path, curve, ckpt, tr = open_run(a)
    for examples in points_to_train(a, curve):
        if train_to(tr, examples, curve, ckpt, a.progress):
            export_checkpoint(ckpt, os.path.join(out, f'ema_{examples}'), dtype=torch.float32,
                              info={'steps': tr.step, 'examples': examples, 'command': curve.get('command')})
        rec = {'examples': examples, 'steps': tr.step, 'all_examples': tr.step * tr.cfg.train.batch_size,
               'train_seconds': round(curve['train_seconds'], 1)}
        rec.update(evaluate_point(tr, out, examples, a.prompts, a.images, a.scenes, a.seed, plan=a.plan))
        curve['points'].append(rec)
        curve.update(hardware=f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads', seed=a.seed)
        json.dump(curve, open(path, 'w'), indent=1)
        s = rec['shapeseval']; u = rec['understanding']
        print(f"{a.name} @ {examples} gen examples ({tr.step} steps, {rec['train_seconds']:.0f} s): ShapesEval "
              f"{s['overall']:.3f} [{s['overall_ci'][0]:.3f}, {s['overall_ci'][1]:.3f}] "
              + ' '.join(f'{c[:6]}={v:.2f}' for c, v in s['scores'].items())
              + (f" | understanding {u['overall']:.2f} " + ' '.join(f'{k}={v:.2f}' for k, v in u['per_type'].items()) if u else '')
              + f" | FID {rec['fid']:.1f} | surplus objects {rec['clutter']['surplus']:.2f}", flush=True)
        if 'plan' in rec:
            from rf_ref.evaluation.plan_eval import plan_summary; print(f'  {plan_summary(rec["plan"])}', flush=True)


def load_curve(path):
    "A run's curve: its folder (runs/curves/NAME) or a committed copy of its curve.json (results/curves/NAME.json)."
    return json.load(open(path if path.endswith('.json') else os.path.join(path, 'curve.json')))


def table(curves) -> str:
    "Markdown table: one row per run and point."
    head = '| run | gen. examples | steps | train s | overall [95% CI] | ' + ' | '.join(CATS) + ' | understanding | FID |'
    rows = [head, '|' + ' --- |' * (head.count('|') - 1)]
    for c in curves:
        for p in c['points']:
            s, u = p['shapeseval'], p['understanding']
            und = f"{u['overall']:.2f}" if u else '-'
            rows.append(f"| {c['name']} | {p['examples']:,} | {p['steps']} | {p['train_seconds']:.0f} | {s['overall']:.3f} "
                        f"[{s['overall_ci'][0]:.2f}, {s['overall_ci'][1]:.2f}] | "
                        + ' | '.join(f"{s['scores'][k]:.2f}" for k in CATS) + f" | {und} | {p['fid']:.0f} |")
    return '\n'.join(rows)


def plan_table(curves) -> str:
    "Markdown table of the plan diagnostics at each point that logged them (--plan); '' when none did."
    head = ('| run | gen. examples | R grid | object cells: codes | k-means | codes used | codes per image | '
            'ShapesEval: sampled R | true plan | plan only | true plan read as objects |')
    rows = [head, '|' + ' --- |' * (head.count('|') - 1)]
    for c in curves:
        for p in c['points']:
            if 'plan' not in p: continue
            pr, se = p['plan']['probe'], p['plan']['shapes_eval']
            g = pr['config']['grid']
            rows.append(f"| {c['name']} | {p['examples']:,} | {g}x{g} | {pr['vq']['object_accuracy']:.2f} | "
                        f"{pr['kmeans']['object_accuracy']:.2f} | {pr['vq']['codes_used']} / {pr['config']['k']} | "
                        f"{pr['vq']['codes_per_image']:.1f} | " + ' | '.join(f"{se[r]['overall']:.3f}" for r in
                        ('sampled', 'oracle_plan', 'plan_only', 'true_plan_codes')) + ' |')
    return '\n'.join(rows) if len(rows) > 2 else ''


def cmd_plot(a):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    curves = [load_curve(f) for f in a.runs]
    fig, axs = plt.subplots(2, 4, figsize=(15, 6.5))
    panels = [('overall', None)] + [(c, c) for c in CATS] + [('understanding', 'und')]
    for ax, (title, key) in zip(axs.flat, panels):
        for c in curves:
            xs = [p['examples'] for p in c['points']]
            if key is None:
                ys = [p['shapeseval']['overall'] for p in c['points']]
                lo = [p['shapeseval']['overall_ci'][0] for p in c['points']]; hi = [p['shapeseval']['overall_ci'][1] for p in c['points']]
                ax.fill_between(xs, lo, hi, alpha=0.2)
            elif key == 'und': ys = [p['understanding']['overall'] if p['understanding'] else float('nan') for p in c['points']]
            else: ys = [p['shapeseval']['scores'][key] for p in c['points']]
            ax.plot(xs, ys, 'o-', label=c['name'])
        ax.set_title(title, fontsize=10); ax.set_ylim(-0.02, 1.02); ax.set_xscale('log', base=2)
        ax.set_xlabel('generation examples seen', fontsize=8)
    axs[0, 0].legend(fontsize=8)
    fig.tight_layout(); fig.savefig(a.out, dpi=110)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c in curves:
        ax.plot([p['train_seconds'] / 60 for p in c['points']], [p['shapeseval']['overall'] for p in c['points']], 'o-', label=c['name'])
    ax.set_xlabel('training wall time (min)'); ax.set_ylabel('ShapesEval overall'); ax.set_ylim(-0.02, 1.02); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(a.out.replace('.png', '_walltime.png'), dpi=110)
    print(table(curves))
    if plans := plan_table(curves): print('\n' + plans)
    print(f'wrote {a.out} and {a.out.replace(".png", "_walltime.png")}')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    t = sub.add_parser('train', help='train one run, evaluating its EMA weights at each point')
    t.add_argument('--name', required=True); t.add_argument('--preset', default='shapes-tiny')
    t.add_argument('--examples', default='8000,16000,32000', help='generation examples seen at each evaluation point')
    t.add_argument('--root', default='runs/curves'); t.add_argument('--device', default=None)
    t.add_argument('--prompts', type=int, default=10, help='ShapesEval prompts per category')
    t.add_argument('--images', type=int, default=4, help='images per prompt')
    t.add_argument('--scenes', type=int, default=50, help='scenes for understanding accuracy (0: skip)')
    t.add_argument('--seed', type=int, default=0); t.add_argument('--progress', action='store_true')
    t.add_argument('--plan', action='store_true', help='also the plan diagnostics per point (R-code probe, oracle-plan and '
                   'plan-only ShapesEval; about a minute per point on a CPU)')
    t.add_argument('overrides', nargs='*')
    p = sub.add_parser('plot', help='plot and tabulate finished runs'); p.add_argument('runs', nargs='+')
    p.add_argument('--out', default='learning_curve.png')
    a = ap.parse_args()
    cmd_train(a) if a.cmd == 'train' else cmd_plot(a)


if __name__ == '__main__':
    main()

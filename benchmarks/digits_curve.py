"""The digits learning curve: accuracy and FID of generated digits against examples seen, RF against pixel-only,
scored by the shipped digit classifier (RESULTS.md, "Digits: real images on a CPU").

Train the classifier that scores the curve (shipped as data/digits_classifier.safetensors + .json):
    python benchmarks/digits_curve.py classifier --out data/digits_classifier.safetensors
Self-supervised stage 0 of the digits preset's encoder (shipped as data/encoder_digits-ssl.safetensors + .json):
    python benchmarks/digits_curve.py ssl --out data/encoder_digits-ssl.safetensors --steps 500
Train one run and score its EMA weights at several points (it checkpoints at each point and resumes):
    OMP_NUM_THREADS=1 python benchmarks/digits_curve.py train --name rf-s0 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/digits_curve.py train --name pixel-s0 --seed 0 model.rf=false
Score a finished run's EMA weights again with other guidance weights (written to guidance.json in the run):
    python benchmarks/digits_curve.py guidance runs/digits/rf-s0 --w-rep 1 --w-pix 1
Table and plot of several runs (runs of the same name up to '-s<seed>' are averaged, each seed shown):
    python benchmarks/digits_curve.py plot runs/digits/rf-s0 runs/digits/pixel-s0 --out results/digits_curve.png
Each run folder gets curve.json (one record per point: examples, steps, train seconds, accuracy, per-digit
accuracy, FID) and samples_<examples>.png (one row per digit).
"""
import argparse, json, os, platform, re, sys, time
import torch
from learning_curve import open_run, points_to_train, train_to   # the same run bookkeeping


def cmd_classifier(a):
    from rf_ref.evaluation.digits import train_digit_classifier
    r = train_digit_classifier(a.steps, seed=a.seed, out=a.out, command='python ' + ' '.join(sys.argv))
    print(f"digit classifier: test accuracy {r['test_accuracy']:.4f} (train {r['train_accuracy']:.4f}), "
          f"{r['steps']} steps, {r['seconds']} s; wrote {a.out} and {os.path.splitext(a.out)[0]}.json")


def cmd_ssl(a):
    from rf_ref.core.presets import get_config
    from rf_ref.method.encoder import ViTEncoder
    from rf_ref.data.images import Digits
    from rf_ref.method.ssl import pretrain_ssl, linear_probe
    cfg = get_config(a.preset)
    run = pretrain_ssl(cfg, steps=a.steps, seed=a.seed, out=a.out, progress=a.progress)
    train, test = Digits('train', cfg.data.image_size), Digits('test', cfg.data.image_size)
    torch.manual_seed(a.seed); fresh = ViTEncoder(cfg.encoder, cfg.data.channels)
    record = {'command': 'python ' + ' '.join(sys.argv), 'preset': a.preset, 'steps': a.steps, 'seed': a.seed,
              'seconds': run['seconds'], 'probe_accuracy': linear_probe(run['encoder'], train, test),
              'probe_accuracy_random_encoder': linear_probe(fresh, train, test),
              'loss_first_10': sum(run['losses'][:10]) / 10, 'loss_last_10': sum(run['losses'][-10:]) / 10,
              'torch': torch.__version__, 'hardware': f'{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads'}
    json.dump(record, open(os.path.splitext(a.out)[0] + '.json', 'w'), indent=1)
    print(json.dumps(record, indent=1))


def evaluate_point(tr, out, examples, seed, classifier, n_eval=360, scfg=None):
    "Accuracy and FID (classifier features) of the EMA weights: one image per real test digit (the first n_eval), same captions."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from rf_ref.data.images import Digits, digit_caption
    from rf_ref.evaluation.digits import digit_scores
    from rf_ref.method.sample import generate
    from rf_ref.data.shapes import show_grid
    model = tr.ema.module.eval()
    test = Digits('test', tr.cfg.data.image_size)
    labels = test.labels[:n_eval]
    captions = [digit_caption(int(k)) for k in labels]
    gen = torch.Generator(device=tr.device).manual_seed(seed)
    t0 = time.perf_counter()
    images = torch.cat([generate(model, captions[k:k + 120], tr.tok, scfg, generator=gen)['images'].cpu()
                        for k in range(0, len(captions), 120)])
    scores = digit_scores(images, captions, classifier, test.images)
    order = [i for d in range(10) for i in (labels == d).nonzero()[:8, 0].tolist()]   # 8 per digit, 0 to 9
    fig = show_grid(images[order], [captions[i][-1] for i in order], ncols=8, size=0.9)
    fig.savefig(os.path.join(out, f'samples_{examples}.png'), dpi=100); plt.close(fig)
    model.train()
    return {**scores, 'eval_seconds': round(time.perf_counter() - t0, 1)}


def cmd_train(a):
    from rf_ref.evaluation.digits import load_digit_classifier
    out, path, curve, ckpt, tr = open_run(a)
    classifier = load_digit_classifier()
    for examples in points_to_train(a, curve):
        train_to(tr, examples, curve, ckpt, a.progress)
        rec = {'examples': examples, 'steps': tr.step, 'train_seconds': round(curve['train_seconds'], 1)}
        rec.update(evaluate_point(tr, out, examples, a.seed, classifier, a.n_eval))
        curve['points'].append(rec)
        curve.update(hardware=f'{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads',
                     torch=torch.__version__, classifier=classifier.record.get('test_accuracy'))
        json.dump(curve, open(path, 'w'), indent=1)
        print(f"{a.name} @ {examples} gen examples ({tr.step} steps, {rec['train_seconds']:.0f} s train): "
              f"accuracy {rec['accuracy']:.3f} FID {rec['fid']:.2f}", flush=True)


def cmd_guidance(a):
    from dataclasses import replace
    from types import SimpleNamespace
    from rf_ref.method.sample import load_model
    from rf_ref.data.datasets import load_tokenizer
    from rf_ref.evaluation.digits import load_digit_classifier
    model = load_model(os.path.join(a.run, 'ckpt'), device='cpu')
    scfg = replace(model.cfg.sample, w_rep=a.w_rep, w_pix=a.w_pix)
    curve = json.load(open(os.path.join(a.run, 'curve.json')))
    tr = SimpleNamespace(ema=SimpleNamespace(module=model), cfg=model.cfg, device=torch.device('cpu'),
                         tok=load_tokenizer(model.cfg.data.tokenizer))
    examples = curve['points'][-1]['examples']
    rec = {'examples': examples, 'w_rep': a.w_rep, 'w_pix': a.w_pix,
           **evaluate_point(tr, a.run, f'{examples}_w{a.w_rep:g}-{a.w_pix:g}', curve.get('seed', 0), load_digit_classifier(), scfg=scfg)}
    path = os.path.join(a.run, 'guidance.json')
    records = (json.load(open(path)) if os.path.exists(path) else []) + [rec]
    json.dump(records, open(path, 'w'), indent=1)
    print(f"{curve['name']} @ {examples} gen examples, w_rep={a.w_rep:g} w_pix={a.w_pix:g}: accuracy {rec['accuracy']:.3f} FID {rec['fid']:.2f}")


def _group(name): return re.sub(r'-s\d+$', '', name)


def table(curves) -> str:
    "Markdown: one row per (run, point), then the mean over seeds of each (group, point)."
    rows = ['| run | seed | gen. examples | steps | train s | accuracy | FID |', '| --- | --- | --- | --- | --- | --- | --- |']
    for c in curves:
        for p in c['points']:
            rows.append(f"| {c['name']} | {c.get('seed', 0)} | {p['examples']:,} | {p['steps']} | {p['train_seconds']:.0f} "
                        f"| {p['accuracy']:.3f} | {p['fid']:.2f} |")
    groups = {}
    for c in curves:
        for p in c['points']: groups.setdefault((_group(c['name']), p['examples']), []).append(p)
    if any(len(v) > 1 for v in groups.values()):
        rows += ['', '| run (mean over seeds) | seeds | gen. examples | accuracy | FID |', '| --- | --- | --- | --- | --- |']
        for (g, e), ps in sorted(groups.items()):
            acc, f = [p['accuracy'] for p in ps], [p['fid'] for p in ps]
            rows.append(f"| {g} | {len(ps)} | {e:,} | {sum(acc) / len(acc):.3f} ({min(acc):.3f}-{max(acc):.3f}) "
                        f"| {sum(f) / len(f):.2f} ({min(f):.2f}-{max(f):.2f}) |")
    return '\n'.join(rows)


def cmd_plot(a):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    curves = [json.load(open(os.path.join(f, 'curve.json'))) for f in a.runs]
    groups = list(dict.fromkeys(_group(c['name']) for c in curves))
    guided = [(c, json.load(open(os.path.join(f, 'guidance.json')))) for f, c in zip(a.runs, curves)
              if os.path.exists(os.path.join(f, 'guidance.json'))]
    colors = dict(zip(groups, plt.rcParams['axes.prop_cycle'].by_key()['color']))
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axs[0], 'accuracy', 'accuracy of the captioned digit'), (axs[1], 'fid', 'FID (classifier features)')):
        for g in groups:
            runs = [c for c in curves if _group(c['name']) == g]
            for c in runs:
                ax.plot([p['examples'] for p in c['points']], [p[key] for p in c['points']], 'o', color=colors[g], alpha=0.4, ms=4)
            xs = sorted({p['examples'] for c in runs for p in c['points']})
            ys = [sum(p[key] for c in runs for p in c['points'] if p['examples'] == x) /
                  sum(1 for c in runs for p in c['points'] if p['examples'] == x) for x in xs]
            ax.plot(xs, ys, '-', color=colors[g], label=f'{g} ({len(runs)} seed{"s" * (len(runs) > 1)})')
        for g in groups:   # the same weights sampled with other guidance (`guidance`): open markers, one per setting
            for c, recs in guided:
                if _group(c['name']) != g: continue
                for r in recs:
                    ax.plot(r['examples'] * (1.06 if r['w_rep'] == 1 else 1.12), r[key], 'D' if r['w_rep'] == 1 else 's',
                            mfc='none', color=colors[g], ms=5)
        ax.set_xscale('log', base=2); ax.set_xlabel('generation examples seen'); ax.set_ylabel(label); ax.grid(alpha=0.3)
        if key == 'fid': ax.set_yscale('log')
    axs[0].legend(fontsize=8)
    fig.suptitle('digits: RF against pixel-only at w_rep=2, w_pix=3 (dots: seeds, lines: their mean)\n'
                 'open markers: the last weights sampled at w_pix=1 (diamonds: w_rep=1, squares: w_rep=2)', fontsize=9)
    fig.tight_layout(); os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True); fig.savefig(a.out, dpi=120)
    md = os.path.splitext(a.out)[0] + '.md'
    text = table(curves)
    if guided:
        text += '\n\n| run | gen. examples | w_rep | w_pix | accuracy | FID |\n| --- | --- | --- | --- | --- | --- |\n' + '\n'.join(
            f"| {c['name']} | {r['examples']:,} | {r['w_rep']:g} | {r['w_pix']:g} | {r['accuracy']:.3f} | {r['fid']:.2f} |"
            for c, recs in guided for r in recs)
    open(md, 'w').write(text + '\n\nCommands: ' + '; '.join(f"`{c['command']}`" for c in curves) + '\n')
    print(text); print(f'wrote {a.out} and {md}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    c = sub.add_parser('classifier', help='train the digit classifier that scores the curve')
    c.add_argument('--out', default='data/digits_classifier.safetensors'); c.add_argument('--steps', type=int, default=1000)
    c.add_argument('--seed', type=int, default=0); c.set_defaults(fn=cmd_classifier)
    s = sub.add_parser('ssl', help="self-supervised stage 0 of the preset's encoder, with its linear probe")
    s.add_argument('--out', default='data/encoder_digits-ssl.safetensors'); s.add_argument('--steps', type=int, default=500)
    s.add_argument('--preset', default='digits'); s.add_argument('--seed', type=int, default=0)
    s.add_argument('--progress', action='store_true'); s.set_defaults(fn=cmd_ssl)
    t = sub.add_parser('train', help='train one run, scoring it at each point')
    t.add_argument('--name', required=True); t.add_argument('--root', default='runs/digits')
    t.add_argument('--preset', default='digits'); t.add_argument('--examples', default='4000,8000,16000,32000')
    t.add_argument('--seed', type=int, default=0); t.add_argument('--device', default='cpu')
    t.add_argument('--n-eval', type=int, default=360, help='generated images per point, one per test digit (at most 360)')
    t.add_argument('--progress', action='store_true'); t.add_argument('overrides', nargs='*')
    t.set_defaults(fn=cmd_train)
    g = sub.add_parser('guidance', help="score a run's last point again with other guidance weights")
    g.add_argument('run'); g.add_argument('--w-rep', type=float, default=1.0); g.add_argument('--w-pix', type=float, default=1.0)
    g.set_defaults(fn=cmd_guidance)
    q = sub.add_parser('plot', help='table and plot of runs')
    q.add_argument('runs', nargs='+'); q.add_argument('--out', default='results/digits_curve.png'); q.set_defaults(fn=cmd_plot)
    a = p.parse_args(argv); a.fn(a)


if __name__ == '__main__':
    main()

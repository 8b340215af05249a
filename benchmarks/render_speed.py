"""Shapes rendering and ShapesEval scoring speed, measured in one run.

Usage: python benchmarks/render_speed.py [--items 10000] [--threads 1]
The data notebook once asserted "10,000 items in under 10 s of CPU time"; that bar is a benchmark, not a test
(a slower machine must still pass `make test`). Record results in BENCHMARKS.md with the hardware.
"""
import argparse, time
import torch
from rf_ref.data.shapes import Shapes
from rf_ref.evaluation.shapes_eval import ShapesEval, RendererModel
from rf_ref.evaluation.judge import load_judge


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--items', type=int, default=10_000); ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = Shapes(a.items, seed=0)
    start = time.process_time(); [ds[i] for i in range(a.items)]; cpu_s = time.process_time() - start
    print(f'render: {a.items} Shapes items in {cpu_s:.2f} s of CPU time ({a.items / cpu_s:.0f} items/s); bar: 10,000 in < 10 s')
    judge = load_judge()
    t0 = time.perf_counter()
    res = ShapesEval(prompts_per_category=100, images_per_prompt=4).run(RendererModel(seed=0), judge, progress=False)
    dt = time.perf_counter() - t0
    print(f'ShapesEval of the renderer: {len(res.records)} images in {dt:.1f} s ({len(res.records) / dt:.0f} images/s), '
          f'overall {res.overall:.3f}; bar: < 120 s')


if __name__ == '__main__':
    main()

"""The checks that need a GPU, in one run of at most 10 minutes on one H100 or H200, written to one JSON file.

1. the notebooks' `#| cuda` cells (bf16 MoE experts at the paper's shape, FlexAttention forward and backward
   against the dense mask in a packed step, the flex encoder);
2. `moe_grouped.py` in bf16 and under bf16 autocast (grouped GEMM against the per-expert loop);
3. `moe_pools.py`: the three pools stacked into one grouped GEMM against pool by pool (sets `mot.stack_pools`);
4. `mfu.py` at mid size: tokens/s, MFU, and peak memory against the planner;
5. `paper-tiny` trained for four steps (two stages) on the GPU under torchrun: the meta build, pretrained folders loaded after
   sharding, streamed shards, packed rows through FlexAttention forward and backward.

Each check runs in its own process with a time limit; a failing check is recorded and the others still run.
The JSON holds, per check, its command, exit status, seconds, the lines that carry its measurements and the
tail of its output. `--device cpu` runs the same script at CPU sizes (without the `#| cuda` cells), to check
the script itself on a machine without a GPU.

    python benchmarks/gpu_check.py                          # writes gpu_check.json
    python benchmarks/gpu_check.py --out /tmp/check.json --limit 200
"""
import argparse, json, os, platform, re, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURES = re.compile(r'ratio|MFU|tokens/s|peak|relative|median|TFLOP|GB|step \d|passed|bfloat16 on', re.I)


def checks(device: str, work: Path) -> list:
    "(name, command) of each check, in order."
    py, bench = sys.executable, ROOT / 'benchmarks'
    cuda = device == 'cuda'
    out = [(f'cuda cells: {nb.stem}', [str(Path(py).parent / 'nbdev_test'), '--flags', 'cuda', '--path', str(nb), '--do_print'])
           for nb in sorted((ROOT / 'nbs').glob('*.ipynb')) if cuda and '#| cuda' in nb.read_text()]
    out += [('moe_grouped bf16', [py, str(bench / 'moe_grouped.py'), '--device', device] + ([] if cuda else ['--dtype', 'bfloat16'])),
            ('moe_grouped bf16 autocast', [py, str(bench / 'moe_grouped.py'), '--device', device, '--dtype', 'float32', '--precision', 'bf16']
             + ([] if cuda else ['--experts', '8', '--tokens', '128', '--repeats', '3'])),
            ('moe_pools', [py, str(bench / 'moe_pools.py'), '--device', device] + ([] if cuda else ['--experts', '4', '--repeats', '3'])),
            ('mfu mid size', [py, str(bench / 'mfu.py'), '--device', device] + ([] if cuda else ['--tiny'])),
            ('paper-tiny, 4 steps under torchrun', [py, str(bench / 'paper_tiny_steps.py'), '--device', device, '--work', str(work)])]
    return out


def run(name: str, command: list, limit: int) -> dict:
    "One check in its own process: its exit status, seconds, measurement lines and output tail."
    start = time.perf_counter()
    try:
        r = subprocess.run(command, capture_output=True, text=True, timeout=limit, cwd=ROOT,
                           env={**os.environ, 'MPLBACKEND': 'Agg'})
        rc, text = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, (e.stdout or b'').decode(errors='replace') + (e.stderr or b'').decode(errors='replace')
    lines = [l for l in text.splitlines() if l.strip()]
    result = {'name': name, 'command': ' '.join(command), 'rc': rc, 'seconds': round(time.perf_counter() - start, 1),
              'measurements': [l for l in lines if MEASURES.search(l) and 'Warning' not in l][-12:], 'tail': lines[-15:]}
    print(f"== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {result['seconds']} s")
    for l in result['measurements'] if rc == 0 else result['tail']: print('  ' + l)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', help='cuda; cpu checks the script itself at CPU sizes')
    p.add_argument('--out', default='gpu_check.json', help='the JSON file written')
    p.add_argument('--limit', type=int, default=150, help='seconds each check may run')
    a = p.parse_args()
    import torch
    if a.device == 'cuda' and not torch.cuda.is_available(): sys.exit('--device cuda: no CUDA device is visible (use --device cpu to check the script)')
    where = torch.cuda.get_device_name() if a.device == 'cuda' else f'CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores'
    print(f'torch {torch.__version__} on {where}')
    with tempfile.TemporaryDirectory() as work:
        results = [run(name, command, a.limit) for name, command in checks(a.device, Path(work))]
    report = {'device': where, 'torch': torch.__version__, 'when': time.strftime('%Y-%m-%d %H:%M:%S'),
              'passed': sum(r['rc'] == 0 for r in results), 'checks': results}
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(f"{report['passed']} of {len(results)} checks passed; written to {a.out}")
    sys.exit(0 if report['passed'] == len(results) else 1)


if __name__ == '__main__':
    main()

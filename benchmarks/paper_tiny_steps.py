"""Four training steps of `paper-tiny` under torchrun on one device: the paper's program at a test's sizes.

Writes tiny Qwen3-MoE and DINOv3 folders and streamed shards of the three sources into a work folder, then runs
`rf-ref train --preset paper-tiny` on one process for `--steps` steps (two of the alignment stage, then the joint stage's): the model built on the meta device, sharded
by FSDP2, the folders loaded after sharding, shards streamed, documents packed into rows that attend through
FlexAttention on CUDA (forward and backward). Prints each step's losses.

    python benchmarks/paper_tiny_steps.py --device cuda
"""
import argparse, json, os, subprocess, sys, tempfile
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', help='cuda or cpu')
    p.add_argument('--steps', type=int, default=4, help='training steps (paper-tiny: 2 per stage)')
    p.add_argument('--work', default='', help='folder for the tiny checkpoints, shards and run (default: a temporary one)')
    a = p.parse_args()
    from rf_ref.core.config import override
    from rf_ref.core.presets import get_config
    from rf_ref.data.shards import export_shards
    from rf_ref.scale.pretrained import write_tiny_checkpoints
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.work or tmp)
        llm, vit = write_tiny_checkpoints(work)
        for name, size, kind in (('gen', 48, 'generation'), ('und', 32, 'understanding'), ('text', 32, 'text')):
            export_shards(override(get_config('shapes-tiny'), [f'data.image_size={size}']).data, str(work / name), kind, n=48,
                          per_shard=8, progress=False)
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '1', '-m', 'rf_ref.cli', 'train',
               '--distributed', '--device', a.device, '--out', str(work / 'run'), '--steps', str(a.steps), '--no-export', '--preset', 'paper-tiny',
               '--llm', llm, '--encoder', vit, f"data.sources=('{work}/gen', '{work}/und', '{work}/text')"]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'MPLBACKEND': 'Agg'})
        if r.returncode: sys.exit(f'paper-tiny failed (exit {r.returncode}):\n{r.stderr[-3000:]}')
        rows = [json.loads(l) for l in open(work / 'run' / 'metrics.jsonl')]
        for x in rows: print(f"step {x.get('step')} ({x.get('stage')}): loss {x['loss']:.4f}, grad norm {x['grad_norm']:.3f}, rows {x.get('rows')}")
        print(f'{len(rows)} steps of paper-tiny on {a.device} under torchrun: ok')


if __name__ == '__main__':
    main()

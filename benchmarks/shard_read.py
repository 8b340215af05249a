"""Items/s of the data paths a `shapes-tiny` run can train on, measured in one run: the indexed Shapes set (rendered
on the fly) against the same scenes streamed from WebDataset shards (`rf_ref.data.shards`), with 0 and with 2
DataLoader workers. A training step of `shapes-tiny` takes 32 items; the model step's own rate is in throughput.py.

Usage: python benchmarks/shard_read.py [--items 2000] [--per-shard 250]
Prints one line per path and the ratios to the indexed set; record them in BENCHMARKS.md with the hardware.
"""
import argparse, tempfile, time
from rf_ref.core.presets import get_config
from rf_ref.data.datasets import build_dataset
from rf_ref.data.shards import ShardLoader, export_shards


def rate(batches, n_batches: int, batch: int) -> float:
    "Items per second over `n_batches` batches of `batch` items, after one batch of warm-up."
    it = iter(batches); next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches): next(it)
    return n_batches * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--items', type=int, default=2000); ap.add_argument('--per-shard', type=int, default=250)
    ap.add_argument('--batch', type=int, default=32)
    a = ap.parse_args()
    data = get_config('shapes-tiny').data
    n_batches = a.items // a.batch - 2
    indexed = build_dataset(data, 'train')
    rates = {'indexed Shapes (rendered)': rate(([indexed[i * a.batch + j] for j in range(a.batch)] for i in range(10 ** 9)),
                                                n_batches, a.batch)}
    with tempfile.TemporaryDirectory() as tmp:
        export_shards(data, tmp, n=a.items, per_shard=a.per_shard, progress=False)
        for workers in (0, 2):
            rates[f'shards, {workers} workers'] = rate(ShardLoader([tmp], [1], a.batch, num_workers=workers), n_batches, a.batch)
    base = rates['indexed Shapes (rendered)']
    for name, r in rates.items(): print(f'{name}: {r:,.0f} items/s ({r / base:.2f}x the indexed set)')


if __name__ == '__main__':
    main()

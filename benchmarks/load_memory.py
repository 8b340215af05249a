"""Peak host memory per rank of loading Hugging Face weights into a sharded RF model, measured in one run: built on meta,
sharded by FSDP2 and allocated, then each rank reads only its rows into its shards (what `build_parallel` does for
`mot.pretrained` and a DINOv3 folder in `encoder.pretrained`), against loading the whole model before sharding it
(`init=load_pretrained` on a model built on meta).

A random Qwen3-MoE folder and a random DINOv3 folder are written first (transformers' format, safetensors shards); their
sizes are set so that the RF model (three copies of the pools, the encoder and its EMA copy) is several hundred MB, well
above what a Python process with torch holds at rest. Each path runs on `--ranks` gloo processes; each rank reports the
growth of its peak resident memory (ru_maxrss) during the load, over its resident memory just before it (the sharded
weights and EMA, already allocated, are not counted: they are the same in any run of that many ranks). Pages of the
memory-mapped safetensors files that a rank reads count as resident.

Usage: python benchmarks/load_memory.py [--ranks 2] [--width 512] [--experts 16] [--layers 4]
Prints per rank and path the peak growth, the whole model's size and the ratios; record them in BENCHMARKS.md.
"""
import argparse, os, resource, socket, tempfile
from dataclasses import replace
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rss() -> int:   # bytes resident now (Linux)
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _peak() -> int:  # bytes: the most resident so far (ru_maxrss is in kB on Linux)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rank(rank, world, port, cfg, llm, vit, path, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port)); torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    from rf_ref.scale.launch import build_parallel
    from rf_ref.scale.parallel import make_mesh
    from rf_ref.scale.pretrained import load_pretrained
    bare = replace(cfg, mot=replace(cfg.mot, pretrained=''), encoder=replace(cfg.encoder, pretrained=''))
    if path == 'after':   # the run's model and EMA, sharded and allocated: what the load adds on top
        model, _ = build_parallel(bare, torch.device('cpu'), make_mesh(device_type='cpu'), meta=True)
    else:                 # on meta, to be loaded whole and sharded afterwards (`init=load_pretrained`)
        from rf_ref.scale.build import build_model
        model = build_model(bare)
    before = _rss()
    load_pretrained(model, llm, vit)
    dist.barrier()
    out[rank] = _peak() - before
    dist.destroy_process_group()


def measure(path, cfg, llm, vit, ranks) -> list:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(ranks, port, cfg, llm, vit, path, out), nprocs=ranks)
    return [out[r] for r in range(ranks)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--ranks', type=int, default=2); ap.add_argument('--width', type=int, default=512)
    ap.add_argument('--experts', type=int, default=16); ap.add_argument('--layers', type=int, default=4)
    a = ap.parse_args()
    from transformers import DINOv3ViTConfig, DINOv3ViTModel, Qwen3MoeConfig, Qwen3MoeForCausalLM
    from rf_ref.core.presets import get_config
    from rf_ref.method.model import RFModel
    from rf_ref.scale.pretrained import with_pretrained
    with tempfile.TemporaryDirectory() as tmp:
        llm, vit = f'{tmp}/llm', f'{tmp}/vit'
        Qwen3MoeForCausalLM(Qwen3MoeConfig(vocab_size=4096, hidden_size=a.width, num_hidden_layers=a.layers, num_attention_heads=8,
                                           num_key_value_heads=2, head_dim=64, num_experts=a.experts, num_experts_per_tok=2,
                                           moe_intermediate_size=a.width, decoder_sparse_step=1, mlp_only_layers=[])).save_pretrained(llm)
        DINOv3ViTModel(DINOv3ViTConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536, patch_size=4,
                                       num_register_tokens=4, image_size=32)).save_pretrained(vit)
        cfg = with_pretrained(get_config('shapes-tiny', ['encoder.pretrained=', 'train.precision=fp32']), llm, vit)
        with torch.device('meta'): whole = sum(p.numel() * 4 for p in RFModel(cfg).parameters())
        print(f'RF model with the folders\' weights: {whole / 1e6:,.0f} MB in float32 ({a.ranks} ranks)')
        for path, name in (('after', 'loaded after sharding, each rank its rows'), ('before', 'loaded whole before sharding')):
            peaks = measure(path, cfg, llm, vit, a.ranks)
            print(f'{name}: peak host memory added by the load, per rank ' + ', '.join(f'{p / 1e6:,.0f} MB' for p in peaks)
                  + f' ({max(peaks) / whole:.2f}x the whole model)')


if __name__ == '__main__':
    main()

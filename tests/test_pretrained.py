"""Hugging Face checkpoint folders streamed into an RFModel built on meta (nbs/61_pretrained.ipynb), beyond the notebook.

- Qwen3-MoE as published (a causal LM: `model.` prefix, per-expert tensors, untied head) with pools='copy', the fused
  layout of transformers 5 with pools='understanding', a dense Qwen3 with tied embeddings, DINOv3 into the encoder and
  its EMA copy: parity with transformers at 1e-5, before and after the rest of the model is materialized;
- the errors: a missing shard, a config that does not fit, a tensor of the wrong shape, an index that names a tensor
  its file lacks, a tensor the model needs that the checkpoint lacks;
- peak host memory of a 135 MB load in a fresh process: bounded, and well under reading every shard at once.
"""
import json, math, os, re, shutil, subprocess, sys
from dataclasses import replace
from pathlib import Path
import pytest
import torch
from torch.testing import assert_close
from safetensors.torch import load_file, save_file

from rf_ref.core.config import Modality
from rf_ref.core.presets import get_config
from rf_ref.method.model import RFModel
from rf_ref.scale.build import materialize
from rf_ref.scale.pretrained import (INDEX, checkpoint_index, dinov3_config, load_dinov3_checkpoint, load_pretrained,
                               load_qwen3_checkpoint, qwen3_config)
from hf_tiny import SMALL, randomize

MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1, mlp_only_layers=[])


def save_sharded(hf, folder):
    "save_pretrained with shards small enough that there are several, checked."
    hf.save_pretrained(folder, max_shard_size='20KB')
    assert (folder / INDEX).exists() and len(set(checkpoint_index(folder).values())) > 1
    return folder


def write_shards(tensors: dict, folder: Path, n_files: int):
    "Save `tensors` in `n_files` safetensors files with an index."
    folder.mkdir(parents=True, exist_ok=True)
    names, weight_map = list(tensors), {}
    for i in range(n_files):
        file = f'model-{i + 1:05d}-of-{n_files:05d}.safetensors'
        part = {k: tensors[k].contiguous() for k in names[i::n_files]}
        save_file(part, folder / file); weight_map |= dict.fromkeys(part, file)
    (folder / INDEX).write_text(json.dumps({'metadata': {}, 'weight_map': weight_map}))


def read_all(folder):
    return {k: v for f in sorted(set(checkpoint_index(folder).values())) for k, v in load_file(folder / f).items()}


def meta_model(**sections):
    with torch.device('meta'): return RFModel(replace(get_config('shapes-tiny'), **sections))


def materialize_rest(model):
    "Initialize what the checkpoints left on meta, as a user would."
    materialize(model, 'cpu')


def loaded_copy(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.is_meta}


def backbone_hidden(model, ids, modality=Modality.TEXT):
    n = ids.shape[1]
    with torch.no_grad():
        return model.backbone(model.tok_embed(ids), torch.full_like(ids, int(modality)), torch.arange(n).expand_as(ids))[0]


@pytest.fixture(scope='module')
def moe(tmp_path_factory):
    "A Qwen3-MoE causal LM saved in shards, as published (per expert, `model.` prefix, untied head)."
    pytest.importorskip('transformers')
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
    hf = randomize(Qwen3MoeForCausalLM(Qwen3MoeConfig(**SMALL, **MOE, norm_topk_prob=False)))
    return hf, save_sharded(hf, tmp_path_factory.mktemp('ckpt') / 'qwen3-moe')


@pytest.fixture(scope='module')
def vit(tmp_path_factory):
    pytest.importorskip('transformers')
    from transformers import DINOv3ViTConfig, DINOv3ViTModel
    torch.manual_seed(0)
    hf = DINOv3ViTModel(DINOv3ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                        patch_size=4, num_register_tokens=4, image_size=32, use_gated_mlp=True,
                                        hidden_act='silu', layerscale_value=0.5)).eval()
    with torch.no_grad():
        for p in hf.parameters(): p.add_(0.1 * torch.randn_like(p))
    return hf, save_sharded(hf, tmp_path_factory.mktemp('ckpt') / 'dinov3')


def test_qwen3_moe_published_layout_copy(moe):
    hf, folder = moe
    index = checkpoint_index(folder)
    assert 'model.layers.1.mlp.experts.3.gate_proj.weight' in index and 'lm_head.weight' in index
    assert len({index[f'model.layers.0.self_attn.{x}_proj.weight'] for x in 'qkv'}) > 1, 'q, k, v should span shards'
    model = meta_model(mot=qwen3_config(folder))
    report = load_qwen3_checkpoint(model, folder)
    assert report.unused == [] and len(report.files) == len(set(index.values()))
    assert not any(n.startswith('backbone.') or n in ('tok_embed.weight', 'lm_head.weight') for n, *_ in report.to_init)
    assert {'encoder.patch_embed.weight', 'connector.0.weight', 'rep_head.weight'} <= {n for n, *_ in report.to_init}
    for block in model.backbone.blocks:
        for p in (1, 2):
            assert torch.equal(block.pools[p].gate_up, block.pools[0].gate_up) and torch.equal(block.pools[p].down, block.pools[0].down)
            assert torch.equal(block.norms[p].weight, block.norms[0].weight)
    ids = torch.randint(0, 100, (2, 11))
    before = loaded_copy(model)
    materialize_rest(model)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    for n, p in model.named_parameters():
        if n in before: assert torch.equal(p, before[n]), f'materializing the rest changed the loaded {n}'
    with torch.no_grad(): ref = hf(ids)
    h = backbone_hidden(model, ids)
    assert_close(h, hf.model(ids).last_hidden_state, atol=1e-5, rtol=1e-5)
    with torch.no_grad(): assert_close(model.lm_head(h), ref.logits, atol=1e-5, rtol=1e-5)
    assert_close(backbone_hidden(model, ids, Modality.PIXEL), h)  # the pixel pool is a copy


def test_qwen3_moe_fused_layout_understanding_only(moe, tmp_path):
    hf, folder = moe
    sd = read_all(folder)
    out = {k: v for k, v in sd.items() if '.experts.' not in k}
    for layer in {re.sub(r'experts\.\d+\..*', 'experts.', k) for k in sd if '.experts.' in k}:
        out[layer + 'gate_up_proj'] = torch.stack([torch.cat([sd[f'{layer}{e}.gate_proj.weight'], sd[f'{layer}{e}.up_proj.weight']])
                                                  for e in range(4)])  # (E, 2f, d)
        out[layer + 'down_proj'] = torch.stack([sd[f'{layer}{e}.down_proj.weight'] for e in range(4)])  # (E, d, f)
    write_shards(out, tmp_path, n_files=5)
    shutil.copy(folder / 'config.json', tmp_path)
    model = meta_model(mot=qwen3_config(tmp_path))
    report = load_qwen3_checkpoint(model, tmp_path, pools='understanding')
    for name, p in model.backbone.named_parameters():
        assert p.is_meta == bool(re.search(r'\.(pools|norms)\.[12]\.', name)), name
    assert_close(model.backbone.blocks[1].pools[0].down, hf.model.layers[1].mlp.experts.down_proj, atol=0, rtol=0)
    ids = torch.randint(0, 100, (2, 9))
    assert_close(backbone_hidden(model, ids), hf.model(ids).last_hidden_state, atol=1e-5, rtol=1e-5)  # text uses pool 0 only
    assert 'backbone.blocks.*.pools.2.gate_up' in repr(report) and 'backbone.blocks.*.pools.0' not in repr(report).split('left to')[1]


def test_dense_qwen3_tied_embeddings(tmp_path):
    pytest.importorskip('transformers')
    from transformers import Qwen3Config, Qwen3ForCausalLM
    hf = randomize(Qwen3ForCausalLM(Qwen3Config(**SMALL, intermediate_size=96, tie_word_embeddings=True)))
    folder = save_sharded(hf, tmp_path / 'dense')
    assert 'lm_head.weight' not in checkpoint_index(folder)
    model = meta_model(mot=qwen3_config(folder))
    assert model.cfg.mot.tie_embeddings and model.cfg.mot.n_experts == 1
    load_qwen3_checkpoint(model, folder)
    assert model.lm_head.weight is model.tok_embed.weight and not model.lm_head.weight.is_meta  # still one tensor
    materialize_rest(model)
    ids = torch.randint(0, 100, (2, 9))
    h = backbone_hidden(model, ids)
    assert_close(h, hf.model(ids).last_hidden_state, atol=1e-5, rtol=1e-5)
    with torch.no_grad(): assert_close(model.lm_head(h), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_dinov3_into_encoder_and_ema_copy(vit):
    hf, folder = vit
    cfg_enc = dinov3_config(folder)
    model = meta_model(encoder=cfg_enc)
    report = load_dinov3_checkpoint(model, folder, fold_input_norm=False)
    assert [n for n, _ in report.unused] == ['embeddings.mask_token']
    assert not any(n.startswith(('encoder.', 'target_encoder.')) for n, *_ in report.to_init)
    materialize_rest(model)
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state                       # (b, 1 + r + gh gw, d)
        for encoder in (model.encoder, model.target_encoder.module):
            out = encoder.forward_tokens(x)
            assert_close(out['cls'], ref[:, 0], atol=1e-5, rtol=1e-5)
            assert_close(out['patches'], ref[:, 5:].reshape(2, 4, 6, 64), atol=1e-5, rtol=1e-5)
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())
    model = meta_model(encoder=cfg_enc)
    load_dinov3_checkpoint(model, folder)  # folded: takes [-1, 1] pixels
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        ref = hf(pixel_values=((x + 1) / 2 - mean) / std).last_hidden_state
        assert_close(model.encoder(x), ref[:, 5:].reshape(2, 4, 6, 64), atol=1e-4, rtol=1e-4)


def test_load_pretrained_both_in_bf16(moe, vit):
    (_, llm), (_, enc) = moe, vit
    model = meta_model(mot=qwen3_config(llm), encoder=dinov3_config(enc))
    report = load_pretrained(model, llm=llm, encoder=enc, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters() if not p.is_meta} == {torch.bfloat16}
    assert {n.split('.')[0] for n, *_ in report.to_init} == {
        'connector', 'vis_pos', 'vq', 'rep_embed', 'rep_pos', 'rep_head', 'pix_embed', 'pix_pos', 'time_embed', 'pix_head'}
    assert report.bytes_loaded == sum(p.numel() * 2 for p in model.parameters() if not p.is_meta)
    assert 'left to initialize (on meta)' in repr(report) and 'unused checkpoint tensors: 1' in repr(report)
    with pytest.raises(ValueError, match='needs llm='): load_pretrained(model)


def test_errors_name_the_tensor_and_the_file(moe, tmp_path):
    _, folder = moe
    mot, files = qwen3_config(folder), sorted(set(checkpoint_index(folder).values()))
    def broken(name, edit):
        d = tmp_path / name; shutil.copytree(folder, d); edit(d); return d
    def edit_tensor(d, key, fn):
        path = d / checkpoint_index(d)[key]; tensors = load_file(path); fn(tensors); save_file(tensors, path)
    k = 'model.layers.0.mlp.experts.2.up_proj.weight'

    d = broken('gone', lambda d: os.remove(d / files[1]))
    with pytest.raises(FileNotFoundError, match=f'{files[1]} is missing: {re.escape(INDEX)} lists it'):
        load_qwen3_checkpoint(meta_model(mot=mot), d)
    with pytest.raises(ValueError, match=r'cfg.mot.width=128 but the checkpoint has 64.*mot_config_from_qwen3'):
        load_qwen3_checkpoint(meta_model(mot=replace(mot, width=128)), folder)
    d = broken('wrong', lambda d: edit_tensor(d, k, lambda t: t.update({k: t[k][:, :32].contiguous()})))
    file = checkpoint_index(d)[k]
    with pytest.raises(ValueError, match=re.escape(f'{k} in {file} has shape (32, 32) but backbone.blocks.0.pools.0.gate_up[2, 32:64] is (32, 64)')):
        load_qwen3_checkpoint(meta_model(mot=mot), d)
    d = broken('lost', lambda d: edit_tensor(d, k, lambda t: t.pop(k)))
    with pytest.raises(KeyError, match=re.escape(f'puts {k} in {file}, which has no such tensor')):
        load_qwen3_checkpoint(meta_model(mot=mot), d)
    def drop(d):
        idx = json.loads((d / INDEX).read_text()); del idx['weight_map'][k]; (d / INDEX).write_text(json.dumps(idx))
    d = broken('absent', drop)
    model = meta_model(mot=mot)
    with pytest.raises(KeyError, match=r'backbone.blocks.0.pools.0.gate_up gets 14336 of its 16384 elements \(from .* and 4 more\)'):
        load_qwen3_checkpoint(model, d)
    assert all(p.is_meta for p in model.parameters()), 'a load that cannot finish must not start'


DENSE = dict(width=768, depth=4, ffn=3072, heads=12, kv_heads=4, vocab=1024, shard_mb=20)

def dense_checkpoint(folder: Path, width, depth, ffn, heads, kv_heads, vocab, shard_mb):
    "A random dense Qwen3 (head_dim 64) in the published naming and shards of about `shard_mb` MB, written without transformers."
    torch.manual_seed(0)
    q, kv = heads * 64, kv_heads * 64
    shapes = {'model.embed_tokens.weight': (vocab, width), 'model.norm.weight': (width,)}
    for i in range(depth):
        l = f'model.layers.{i}.'
        shapes |= {l + 'input_layernorm.weight': (width,), l + 'post_attention_layernorm.weight': (width,),
                   l + 'self_attn.q_proj.weight': (q, width), l + 'self_attn.k_proj.weight': (kv, width),
                   l + 'self_attn.v_proj.weight': (kv, width), l + 'self_attn.o_proj.weight': (width, q),
                   l + 'self_attn.q_norm.weight': (64,), l + 'self_attn.k_norm.weight': (64,),
                   l + 'mlp.gate_proj.weight': (ffn, width), l + 'mlp.up_proj.weight': (ffn, width),
                   l + 'mlp.down_proj.weight': (width, ffn)}
    folder.mkdir(parents=True, exist_ok=True)
    shards, size = [{}], 0
    for name, shape in shapes.items():
        if size + math.prod(shape) * 4 > shard_mb * 2**20: shards.append({}); size = 0
        shards[-1][name] = 0.02 * torch.randn(shape); size += math.prod(shape) * 4
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
        save_file(shard, folder / file); weight_map |= dict.fromkeys(shard, file)
    (folder / INDEX).write_text(json.dumps({'metadata': {}, 'weight_map': weight_map}))
    (folder / 'config.json').write_text(json.dumps(dict(
        vocab_size=vocab, hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=64, intermediate_size=ffn, rms_norm_eps=1e-6, tie_word_embeddings=False, max_position_embeddings=4096,
        rope_theta=10000.0, model_type='qwen3')))
    return [os.path.getsize(folder / f) for f in sorted(set(weight_map.values()))]


MEASURE = '''
import json, sys, torch
from dataclasses import replace
from pathlib import Path
from safetensors.torch import load_file
from rf_ref.core.presets import get_config
from rf_ref.method.model import RFModel
from rf_ref.scale.pretrained import checkpoint_index, load_qwen3_checkpoint, qwen3_config
from rf_ref.scale.qwen3 import load_qwen3_moe_state_dict
folder, how = Path(sys.argv[1]), sys.argv[2]
with torch.device('meta'): model = RFModel(replace(get_config('shapes-tiny'), mot=qwen3_config(folder)))
def status(key): return int(next(l for l in open('/proc/self/status') if l.startswith(key + ':')).split()[1]) * 1024
try: open('/proc/self/clear_refs', 'w').write('5')  # the peak starts again from the current size
except OSError: pass
before = status('VmHWM')
if how == 'streaming': loaded = load_qwen3_checkpoint(model, folder).bytes_loaded
else:  # every shard in one dict, then copied into a materialized backbone
    sd = {k: v for f in sorted(set(checkpoint_index(folder).values())) for k, v in load_file(folder / f).items()}
    model.backbone.to_empty(device='cpu'); load_qwen3_moe_state_dict(model.backbone, sd)
    loaded = sum(p.numel() * p.element_size() for p in model.backbone.parameters())
print(json.dumps({'growth': status('VmHWM') - before, 'loaded': loaded}))
'''

def peak_growth(folder, how):
    out = subprocess.run([sys.executable, '-c', MEASURE, str(folder), how], capture_output=True, text=True,
                         env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=3600)  # a hang guard only
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads VmHWM from /proc')
def test_peak_memory_streams(tmp_path):
    shards = dense_checkpoint(tmp_path, **DENSE)
    checkpoint, largest, MB = sum(shards), max(shards), 2**20
    stream, at_once = peak_growth(tmp_path, 'streaming'), peak_growth(tmp_path, 'all at once')
    allowance = 64 * MB  # Python and torch: allocator slack, small temporaries
    bound = stream['loaded'] + 2 * largest + allowance
    numbers = (f"streaming grew the peak by {stream['growth'] / MB:.0f} MB for {stream['loaded'] / MB:.0f} MB of loaded parameters; "
               f"bound = loaded + 2 x largest shard ({largest / MB:.0f} MB) + {allowance // MB} MB = {bound / MB:.0f} MB; "
               f"all at once grew it by {at_once['growth'] / MB:.0f} MB; checkpoint {checkpoint / MB:.0f} MB in {len(shards)} shards")
    assert len(shards) >= 6 and stream['loaded'] > 2 * checkpoint, numbers  # copy: the feed-forward three times
    assert stream['growth'] <= bound, numbers
    assert at_once['growth'] - stream['growth'] > checkpoint / 2, numbers  # the measurement sees the whole checkpoint

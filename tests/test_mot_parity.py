"""Parity of rf_ref.method.mot with Hugging Face Qwen3 decoders, beyond the notebook's check.

- the per-expert key layout of published Qwen3-MoE checkpoints (`model.layers.{i}.mlp.experts.{e}.gate_proj.weight`),
  with `norm_topk_prob=False` and right padding (hidden states and the masked auxiliary loss);
- a dense Qwen3 decoder loaded into dense pools;
- `pools='understanding'` fills only the first pool.
"""
import pytest
import torch
from torch.testing import assert_close

transformers = pytest.importorskip('transformers')
from transformers import Qwen3Config, Qwen3Model, Qwen3MoeConfig, Qwen3MoeModel
from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

from rf_ref.core.config import Modality
from rf_ref.method.mot import MoTTransformer, attention_mask
from rf_ref.scale.qwen3 import load_qwen3_moe_state_dict, mot_config_from_qwen3
from hf_tiny import SMALL, randomize


def per_expert_checkpoint(hf_state_dict, n_experts):
    "The layout of published checkpoints: `model.` prefix, one module per expert."
    out = {}
    for k, v in hf_state_dict.items():
        if k.endswith('mlp.experts.gate_up_proj'):
            base = k.removesuffix('gate_up_proj')
            for e in range(n_experts):
                gate, up = v[e].chunk(2, dim=0)
                out[f'model.{base}{e}.gate_proj.weight'], out[f'model.{base}{e}.up_proj.weight'] = gate, up
        elif k.endswith('mlp.experts.down_proj'):
            base = k.removesuffix('down_proj')
            for e in range(n_experts): out[f'model.{base}{e}.down_proj.weight'] = v[e]
        else: out[f'model.{k}'] = v
    return out


def test_moe_per_expert_layout_with_padding():
    cfg = Qwen3MoeConfig(**SMALL, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                         decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=False)
    hf = randomize(Qwen3MoeModel(cfg))
    ours = MoTTransformer(mot_config_from_qwen3(cfg)).eval()
    unused = load_qwen3_moe_state_dict(ours, per_expert_checkpoint(hf.state_dict(), 4))
    assert unused == ['model.embed_tokens.weight']
    assert ours.cfg.norm_topk_prob is False

    torch.manual_seed(1)
    ids = torch.randint(0, 100, (2, 10))
    keep = torch.ones(2, 10, dtype=torch.long); keep[1, 7:] = 0  # right padding in the second row
    modality = torch.where(keep.bool(), int(Modality.TEXT), int(Modality.PAD))
    with torch.no_grad():
        hf_out = hf(ids, attention_mask=keep, output_router_logits=True)
        h, aux = ours(hf.embed_tokens(ids), modality, torch.arange(10).expand(2, 10), attention_mask(modality))
    assert_close(h[keep.bool()], hf_out.last_hidden_state[keep.bool()], atol=1e-5, rtol=1e-5)
    assert_close(aux / ours.cfg.router_aux_coef, load_balancing_loss_func(hf_out.router_logits, 4, 2, keep))


def test_dense_qwen3():
    cfg = Qwen3Config(**SMALL, intermediate_size=96)
    hf = randomize(Qwen3Model(cfg))
    ours = MoTTransformer(mot_config_from_qwen3(cfg)).eval()
    assert (ours.cfg.n_experts, ours.cfg.ffn_hidden) == (1, 96)
    load_qwen3_moe_state_dict(ours, hf.state_dict())
    ids = torch.randint(0, 100, (2, 9))
    modality = torch.tensor([[0] * 3 + [2] * 3 + [3] * 3] * 2)  # every pool is a copy: any routing gives the same
    with torch.no_grad():
        h, aux = ours(hf.embed_tokens(ids), modality, torch.arange(9).expand(2, 9))
    assert_close(h, hf(ids).last_hidden_state, atol=1e-5, rtol=1e-5)
    assert float(aux) == 0.0


def test_understanding_pool_only():
    cfg = Qwen3Config(**SMALL, intermediate_size=96)
    hf = randomize(Qwen3Model(cfg))
    ours = MoTTransformer(mot_config_from_qwen3(cfg))
    before = ours.blocks[0].pools[2].down.weight.clone()
    load_qwen3_moe_state_dict(ours, hf.state_dict(), pools='understanding')
    assert_close(ours.blocks[0].pools[0].down.weight, hf.layers[0].mlp.down_proj.weight)
    assert_close(ours.blocks[0].pools[2].down.weight, before)
    with pytest.raises(ValueError, match='pools'):
        load_qwen3_moe_state_dict(ours, hf.state_dict(), pools='all')

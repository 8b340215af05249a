"""NaViT packing (rf_ref.scale.packing), beyond the notebook's checks.

- packed == separate for several model variants: RF with discrete tokens, the continuous-regression
  baseline, pixel-only, and an MoE backbone with captions under L_LM;
- the mask never crosses documents, and FlexAttention's block mask has the dense mask's tiles;
- the packer's bookkeeping: positions, targets at document boundaries, padding, errors.
"""
import pytest
import torch

from rf_ref.core.config import Modality
from rf_ref.core.presets import get_config
from rf_ref.data.datasets import IGNORE, generation_batch, load_tokenizer, rope_positions
from rf_ref.method.model import RFModel
from rf_ref.method.mot import attention_mask
from rf_ref.scale.packing import (document_losses, document_noise, first_fit, generation_document, pack, packed_losses,
                            packed_mask, packed_visibility, stream_rows, text_document, understanding_document)
from rf_ref.data.shapes import Shapes

TINY = ['mot.depth=2', 'encoder.depth=1', 'mot.width=64', 'mot.heads=4', 'mot.kv_heads=2', 'mot.head_dim=16',
        'mot.ffn_hidden=128', 'encoder.width=32', 'encoder.heads=2', 'encoder.mlp_hidden=64']


def documents(cfg, tok):
    "Seven documents: generation at 32, 48 and 64 px, understanding at 64 and 32 px, two texts."
    item = {s: Shapes(8, image_size=s, seed=2) for s in (32, 48, 64)}
    return [generation_document(cfg, tok, item[32][0].caption, item[32][0].image),
            generation_document(cfg, tok, item[48][1].caption, item[48][1].image),
            understanding_document(cfg, tok, item[64][2].image, *item[64][2].qa[0][:2]),
            generation_document(cfg, tok, item[64][3].caption, item[64][3].image),
            text_document(cfg, tok, ' and '.join(item[32][k].caption for k in range(4))),
            understanding_document(cfg, tok, item[32][5].image, *item[32][5].qa[0][:2]),
            text_document(cfg, tok, 'a red circle')]


def setup(overrides=()):
    cfg = get_config('shapes-tiny', TINY + list(overrides))
    tok = load_tokenizer(cfg.data.tokenizer)
    torch.manual_seed(0)
    model = RFModel(cfg).eval()
    torch.nn.init.normal_(model.pix_head.weight, std=0.02)  # L_FM must depend on the hidden states
    docs = documents(cfg, tok)
    noise = document_noise(model, docs, generator=torch.Generator().manual_seed(0))
    for n, (text, rep) in zip([n for n in noise if n is not None], ((True, False), (False, True), (False, False))):
        n['drop_text'][:], n['drop_rep'][:] = text, rep
    return cfg, model, docs, noise


@pytest.mark.parametrize('overrides', [(), ('model.rep_target=continuous',), ('model.rf=false',),
                                       ('mot.n_experts=4', 'mot.experts_per_token=2', 'model.caption_lm=true')])
def test_packed_equals_separate(overrides):
    cfg, model, docs, noise = setup(overrides)
    packed = pack(cfg, docs, 224)
    assert len(packed) == 2, packed.rows
    with torch.no_grad():
        together = packed_losses(model, packed, noise)
        alone = [document_losses(model, d, n) for d, n in zip(docs, noise)]
    for i, d in enumerate(docs):
        diff = (together['hidden'][i] - alone[i]['hidden']).abs().max().item()
        assert diff <= 1e-5, f'document {i} ({d.kind}): hidden states differ by {diff:.2e}'
        for k, v in together['documents'][i].items():
            assert abs(v.item() - alone[i][k].item()) <= 1e-5, f'document {i} ({d.kind}): {k} {v.item()} vs {alone[i][k].item()}'
    gen = [i for i, d in enumerate(docs) if d.kind == 'generation']
    assert torch.isclose(together['fm'], sum(alone[i]['fm'] for i in gen) / len(gen), atol=1e-5)


def test_mask_is_block_diagonal_and_flex_agrees():
    cfg, model, docs, noise = setup()
    packed = pack(cfg, docs, 224)
    visible = packed_visibility(packed, noise)
    mask = packed_mask(packed, visible)
    across = packed.document[:, :, None] != packed.document[:, None, :]
    assert not (mask & across).any(), 'a token attends across documents'
    for i, d in enumerate(docs):
        r, s, e = packed.slots[i]
        assert torch.equal(mask[r, s:e, s:e], attention_mask(d.modality, None, packed.of(visible, i))[0]), i
    block_mask = packed_mask(packed, visible, flex=True, block_size=32)
    tiles = mask.view(len(packed), 7, 32, 7, 32).any(4).any(2)
    assert torch.equal(block_mask.to_dense()[:, 0].bool(), tiles)
    with torch.no_grad():
        dense, flex = packed_losses(model, packed, noise), packed_losses(model, packed, noise, flex=True, block_size=32)
    assert max((a - b).abs().max().item() for a, b in zip(dense['hidden'], flex['hidden'])) <= 1e-5


def test_pack_bookkeeping():
    cfg, _, docs, _ = setup()
    packed = pack(cfg, docs, 224)
    assert sorted(sum(packed.rows, [])) == list(range(len(docs)))
    for i, d in enumerate(docs):
        assert torch.equal(packed.of(packed.positions, i), rope_positions(d.modality)), i
        assert packed.of(packed.positions, i)[0, 0].item() == 0
        assert packed.of(packed.targets, i)[0, -1].item() == IGNORE
    pad = packed.document < 0
    assert torch.equal(pad, packed.modality == Modality.PAD) and (packed.targets[pad] == IGNORE).all()
    has = packed.targets[:, :-1] != IGNORE
    assert torch.equal(packed.targets[:, :-1][has], packed.tokens[:, 1:][has])
    assert (packed.document[:, 1:] == packed.document[:, :-1])[has].all()
    assert packed.meta[3]['grids'] == {'rep': (8, 8), 'pixel': (8, 8)} and packed.meta[4]['grids'] == {}
    assert (packed.modality[packed.meta[3]['row'], slice(*packed.meta[3]['pixel'])] == Modality.PIXEL).all()
    with pytest.raises(ValueError, match=f'document 3 has {docs[3].tokens.shape[1]} tokens, more than the row budget max_tokens=100'):
        pack(cfg, docs, 100)


def test_packer_errors_and_rows():
    with pytest.raises(ValueError, match='document 1 has 12 tokens, more than the row budget max_tokens=10'):
        stream_rows([3, 12], 10)
    lengths = [7, 1, 9, 4, 4, 6, 2, 8, 5, 3] * 5
    for rows in (first_fit(lengths, 16), first_fit(lengths, 16, sort=False), stream_rows(lengths, 16, 1), stream_rows(lengths, 16, 8)):
        assert sorted(sum(rows, [])) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= 16 for row in rows)
    assert len(first_fit(lengths, 16)) == -(-sum(lengths) // 16)   # this set packs into the fewest rows possible
    cfg = get_config('shapes-tiny')
    tok = load_tokenizer('words')
    two = generation_document(cfg, tok, 'a circle', torch.zeros(3, 32, 32))
    batch = generation_batch(['a circle', 'two red squares'], torch.zeros(2, 3, 32, 32), tok, 16, 16, 40)
    with pytest.raises(ValueError, match='pack documents built one at a time'):
        pack(cfg, [two, batch], 256)
    with pytest.raises(ValueError, match='multiple of 8'):
        generation_document(cfg, tok, 'a circle', torch.zeros(3, 36, 36))


def test_training_step_updates_the_codebook_once():
    cfg, model, docs, noise = setup()
    packed = pack(cfg, docs, 224)
    before = model.vq.codebook.clone()
    out = packed_losses(model, packed, noise, update=True)
    assert not torch.equal(before, model.vq.codebook) and {'vq_usage', 'vq_perplexity'} <= set(out)
    out['loss'].backward()
    for name in ('encoder.patch_embed.weight', 'connector.0.weight', 'pix_embed.weight', 'rep_embed.weight', 'time_embed.mlp.0.weight'):
        assert model.get_parameter(name).grad.abs().sum() > 0, f'no gradient reached {name}'
    assert all(p.grad is None for p in model.target_encoder.parameters())   # targets get no gradients

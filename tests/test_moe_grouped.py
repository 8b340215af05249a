"""The grouped-GEMM expert path of rf_ref.method.moe.MoE against the per-expert loop, beyond the notebook's check.

- outputs and gradients (input, router, gate_up, down) agree in float32 over several expert counts,
  top-k and batch sizes, with experts that get no token, in training and under no_grad;
- the same through a whole MoT transformer with mixture-of-experts pools (loss and every gradient);
- where the grouped GEMM cannot run (float64, widths that break 16-byte strides) `impl='auto'` takes the loop and
  `impl='grouped'` raises with the reason; under bfloat16 autocast it runs (the operands cast explicitly).
"""
import pytest
import torch
from torch.testing import assert_close

from rf_ref.core.config import MoTConfig
from rf_ref.method.moe import MoE, grouped_mm_unsupported
from rf_ref.method.mot import MoTTransformer


def outputs_and_grads(moe, x, impl, seed=1):
    "Output, logits and the gradients of x, router, gate_up, down (zeros where none) for a fixed random loss."
    moe.impl = impl
    moe.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    y, logits = moe(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    ((y * g).sum() + 0 * logits.sum()).backward()  # 0 * logits keeps the router in the graph of an empty batch
    params = (moe.router.weight, moe.gate_up, moe.down)
    return [y.detach(), logits.detach(), x.grad] + [torch.zeros_like(p) if p.grad is None else p.grad for p in params]


def assert_same(grouped, loop, rel=1e-5):
    names = ['y', 'logits', 'dx', 'drouter', 'dgate_up', 'ddown']
    for name, a, b in zip(names, grouped, loop):
        scale = float(b.abs().max()) if b.numel() else 0.0
        assert_close(a, b, rtol=0, atol=rel * max(scale, 1e-30), msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('n_experts,top_k,tokens,width,hidden', [
    (8, 2, 37, 32, 24), (4, 1, 5, 16, 8), (16, 4, 64, 64, 48), (6, 6, 9, 16, 16), (3, 2, 1, 8, 4)])
def test_grouped_equals_loop(n_experts, top_k, tokens, width, hidden):
    torch.manual_seed(n_experts * 100 + tokens)
    moe = MoE(width, hidden, n_experts, top_k)
    x = torch.randn(tokens, width)
    assert moe.expert_path(x) == 'grouped'
    assert_same(outputs_and_grads(moe, x, 'grouped'), outputs_and_grads(moe, x, 'loop'))


def test_experts_without_tokens():
    torch.manual_seed(0)
    moe = MoE(16, 24, n_experts=8, top_k=2)
    x = torch.randn(30, 16)
    x[:, -1] = 1
    unused = [0, 1, 4, 7]  # first, last and inner groups empty
    with torch.no_grad(): moe.router.weight[unused, -1] = -1000.
    assert torch.bincount(moe(x)[1].topk(2).indices.flatten(), minlength=8)[unused].sum() == 0
    grouped, loop = outputs_and_grads(moe, x, 'grouped'), outputs_and_grads(moe, x, 'loop')
    assert_same(grouped, loop)
    for grads in (grouped, loop):
        assert grads[4][unused].abs().max() == 0 and grads[5][unused].abs().max() == 0


def test_empty_batch():
    moe = MoE(16, 24, n_experts=4, top_k=2)
    grouped, loop = outputs_and_grads(moe, torch.randn(0, 16), 'grouped'), outputs_and_grads(moe, torch.randn(0, 16), 'loop')
    assert [tuple(t.shape) for t in grouped[:3]] == [(0, 16), (0, 4), (0, 16)]
    for a, b in zip(grouped, loop): assert torch.equal(a, b)


def test_no_grad_inference():
    torch.manual_seed(0)
    moe, x = MoE(32, 16, 8, 2), torch.randn(20, 32)
    with torch.no_grad():
        moe.impl = 'grouped'; y_grouped, _ = moe(x)
        moe.impl = 'loop'; y_loop, _ = moe(x)
    assert_close(y_grouped, y_loop, rtol=0, atol=1e-6)


def test_mot_transformer_grouped_equals_loop():
    torch.manual_seed(0)
    cfg = MoTConfig(width=32, depth=2, heads=4, kv_heads=2, head_dim=8, ffn_hidden=24, n_experts=6, experts_per_token=2)
    model = MoTTransformer(cfg)
    h, modality = torch.randn(2, 14, 32), torch.randint(0, 4, (2, 14))
    positions = torch.arange(14).expand(2, 14)
    results = {}
    for impl in ('grouped', 'loop'):
        for m in model.modules():
            if isinstance(m, MoE): m.impl = impl
        model.zero_grad(set_to_none=True)
        out, aux = model(h, modality, positions)
        loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + aux
        loss.backward()
        results[impl] = [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert len(results['grouped']) == len(results['loop'])
    for a, b in zip(results['grouped'], results['loop']): assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fallbacks_and_errors():
    torch.manual_seed(0)
    moe64, x64 = MoE(16, 24, 4, 2).double(), torch.randn(6, 16, dtype=torch.float64)
    assert moe64.expert_path(x64) == 'loop'
    y64, _ = moe64(x64)
    moe32 = MoE(16, 24, 4, 2)
    moe32.load_state_dict({k: v.float() for k, v in moe64.state_dict().items()})
    assert_close(moe32(x64.float())[0], y64.float(), rtol=1e-4, atol=1e-5)  # auto in float64 = the loop, same maths
    moe64.impl = 'grouped'
    with pytest.raises(RuntimeError, match='dtype torch.float64'): moe64(x64)

    odd = MoE(10, 24, 4, 2)  # 40-byte rows: not a multiple of 16 bytes
    assert odd.expert_path(torch.randn(3, 10)) == 'loop'
    odd.impl = 'grouped'
    with pytest.raises(RuntimeError, match='d=10'): odd(torch.randn(3, 10))

    bf16 = MoE(16, 12, 4, 2).bfloat16()  # f=12 is 24 bytes in bfloat16
    assert 'f=12' in grouped_mm_unsupported(torch.randn(3, 16, dtype=torch.bfloat16), bf16.gate_up, bf16.down)

    torch.manual_seed(0)
    amp, x = MoE(16, 24, 4, 2), torch.randn(30, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert amp.expert_path(x) == 'grouped'
        outs = {}
        for impl in ('grouped', 'loop'): amp.impl = impl; outs[impl] = amp(x)[0]
    assert outs['grouped'].dtype == torch.float32
    assert_close(outs['grouped'], outs['loop'], atol=2e-2 * float(outs['loop'].abs().max()), rtol=0)

    with pytest.raises(ValueError, match="impl='fast'"): MoE(16, 24, 4, 2, impl='fast')

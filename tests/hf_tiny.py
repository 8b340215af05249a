"""Tiny random Hugging Face Qwen3 decoders shared by the parity and checkpoint-loading tests."""
import torch

SMALL = dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)


def randomize(model, seed=0):
    "Weights larger than the default init, so that attention, norms and routing all matter."
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith('norm.weight') else 0.2 * torch.randn_like(p))
    return model.eval()

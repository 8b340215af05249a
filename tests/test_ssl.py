"""The self-supervised stage 0 (rf_ref.method.ssl): it beats a random encoder's linear probe on digits, runs on the CIFAR-10
fixture, and saves what `encoder.pretrained` loads."""
import numpy as np
import pytest
import torch
from rf_ref.core.presets import get_config
from rf_ref.method.encoder import ViTEncoder
from rf_ref.data.images import Digits, CIFAR10, write_cifar10_fixture
from rf_ref.method.ssl import pretrain_ssl, linear_probe

SMALL = ['encoder.depth=2', 'encoder.width=64', 'encoder.mlp_hidden=128']


def test_probe_beats_random_encoder_on_digits():
    cfg = get_config('digits', SMALL)
    train, test = Digits('train'), Digits('test')
    torch.manual_seed(0); fresh = ViTEncoder(cfg.encoder)
    run = pretrain_ssl(cfg, steps=120, progress=False)
    acc_random, acc_ssl = linear_probe(fresh, train, test), linear_probe(run['encoder'], train, test)
    print(f'linear probe on digits: random encoder {acc_random:.3f}, self-distilled ({run["steps"]} steps) {acc_ssl:.3f}')
    assert acc_ssl > acc_random + 0.05, f'self-distilled probe {acc_ssl:.3f} should beat the random encoder {acc_random:.3f} by 0.05'


def test_cifar10_fixture_runs_and_loads_into_rf(tmp_path):
    from rf_ref.method.model import RFModel
    from rf_ref.method.pretrain import load_encoder
    root = write_cifar10_fixture(str(tmp_path / 'cifar'))
    cfg = get_config('cifar10-tiny', [f'data.root={root}'])
    out = str(tmp_path / 'enc.safetensors')
    run = pretrain_ssl(cfg, steps=3, batch_size=8, out=out, progress=False)
    assert len(run['losses']) == 3 and np.isfinite(run['losses']).all(), run['losses']
    acc = linear_probe(run['encoder'], CIFAR10(root, 'train'), CIFAR10(root, 'test'))
    assert 0 <= acc <= 1, acc                       # random fixture labels: the probe only has to run
    model = RFModel(cfg); load_encoder(model, out)  # the file is what encoder.pretrained reads
    torch.testing.assert_close(model.encoder.state_dict()['patch_embed.weight'], run['encoder'].state_dict()['patch_embed.weight'])
    torch.testing.assert_close(model.target_encoder.module.state_dict()['patch_embed.weight'], run['encoder'].state_dict()['patch_embed.weight'])


def test_bad_arguments_name_the_fix():
    cfg = get_config('digits', SMALL)
    with pytest.raises(ValueError, match='steps=0 must be an integer >= 1'): pretrain_ssl(cfg, steps=0)
    with pytest.raises(ValueError, match='momentum=1.5 must be in'): pretrain_ssl(cfg, steps=1, momentum=1.5)
    shapes = get_config('shapes-tiny', ['data.n_train=4', 'data.n_test=4'])
    with pytest.raises(ValueError, match='Shapes scenes have none'):
        from rf_ref.data.datasets import build_dataset
        linear_probe(ViTEncoder(shapes.encoder), build_dataset(shapes.data), build_dataset(shapes.data, 'test'))

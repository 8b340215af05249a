"""CIFAR-10 and ImageNet-64 end to end on fixtures in the release formats: the tiny presets train a few steps,
sample from class-name captions, and score FID with Inception features (random weights in a temporary file;
a real run passes the saved torchvision weights). Nothing downloads."""
import math
import pytest
import torch
from rf_ref.core.presets import get_config
from rf_ref.data.images import write_cifar10_fixture, write_imagenet64_fixture
from rf_ref.method.train import Trainer, fit
from rf_ref.method.sample import generate
from rf_ref.evaluation.shapes_eval import fid, InceptionFeatures


@pytest.fixture(scope='module')
def inception(tmp_path_factory):
    "Inception-v3 features from random weights saved like the real ones (`torch.save(model.state_dict(), path)`)."
    from torchvision.models import inception_v3
    path = tmp_path_factory.mktemp('inception') / 'inception_v3.pth'
    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=False, init_weights=True).state_dict(), path)
    return InceptionFeatures(path)


def end_to_end(preset, root, out, inception, names):
    cfg = get_config(preset, [f'data.root={root}', f'train.out_dir={out}'])
    tr = Trainer(cfg, device='cpu')
    batch = next(tr.batches(0))
    assert all(t.startswith('a photo of ') for t in batch['generation'].texts), batch['generation'].texts
    assert batch['understanding'] is not None and 'what is in this photo?' in batch['understanding'].texts[0]
    history = fit(tr, steps=cfg.train.stages[0].steps, progress=False)
    assert tr.step == 4 and all(math.isfinite(r['loss']) for r in history if 'loss' in r), history
    captions = [f'a photo of a {n}' for n in names]
    images = generate(tr.ema.module, captions, tr.tok, generator=torch.Generator().manual_seed(0)).images
    size = cfg.data.image_size
    assert images.shape == (len(captions), 3, size, size) and images.abs().max() <= 1, images.shape
    real = torch.stack([tr.data[i]['image'] for i in range(len(captions))])
    score = fid(images, real, inception)
    print(f'{preset}: 4 steps, {len(captions)} samples, FID (random Inception weights) {score:.3g}')
    assert math.isfinite(score) and score > 0, score
    return score


def test_cifar10_end_to_end(tmp_path, inception):
    root = write_cifar10_fixture(str(tmp_path / 'cifar10'))
    end_to_end('cifar10-tiny', root, str(tmp_path / 'run'), inception, ['cat', 'dog', 'ship', 'truck'] * 2)


def test_imagenet64_end_to_end(tmp_path, inception):
    root = write_imagenet64_fixture(str(tmp_path / 'imagenet64'), n=16)
    end_to_end('imagenet64-tiny', root, str(tmp_path / 'run'), inception, [f'object {k}' for k in (1, 2, 3, 4)] * 2)


def test_missing_inception_weights_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match='inception_v3'): InceptionFeatures(tmp_path / 'none.pth')

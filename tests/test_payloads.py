"""Nothing foreign runs when rf_ref reads a file: a pickle whose `__reduce__` runs `touch MARKER` is planted in every file
rf_ref could unpickle (a legacy state.pt, a sharded checkpoint's .metadata and a bytes item of its .distcp shard, a
checkpoint's weights, CIFAR-10 batches), the manifest's hashes rewritten to match (whoever plants it writes the manifest
too); each command, run as a real process, exits with one `error:` line naming the file, and the marker never appears.
Bad CIFAR-10 and ImageNet-64 labels and a non-UTF-8 class names file give one line each too."""
import io, os, pickle, shutil
import numpy as np
import pytest
import torch
from cli import one_line_error, rehash, rf_ref
from rf_ref.core.checkpoint import CheckpointError
from rf_ref.scale.dcp import export_sharded, read_metadata
from rf_ref.data.images import write_cifar10_fixture, write_imagenet64_fixture

TINY = ['mot.depth=1', 'encoder.depth=1', 'encoder.pretrained=', 'train.batch_size=4', 'data.understanding_fraction=0.5',
        'data.n_train=16', 'train.stages.0.steps=2', 'train.warmup_steps=1', 'train.log_every=1', 'train.ckpt_every=2']


class Payload:
    "Unpickled by a full unpickler, it creates `marker`."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def torch_saved(obj) -> bytes:
    "`obj` as DCP writes a bytes item (`torch.save`)."
    buf = io.BytesIO(); torch.save(obj, buf); return buf.getvalue()


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A real sharded run of two steps in one process (`rf-ref train --distributed`), with its export."
    out = tmp_path_factory.mktemp('payloads') / 'run'
    r = rf_ref('train', '--distributed', '--device', 'cpu', '--out', out, *TINY); assert r.returncode == 0, r.stderr[-3000:]
    assert (out / 'ckpt' / 'step-00000002' / '.metadata').exists() and (out / 'export' / 'ema.safetensors').exists()
    return out


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / 'MARKER'
    yield m
    assert not m.exists(), 'the payload ran'


def copy_run(run, tmp_path):
    dst = tmp_path / 'copy'; shutil.copytree(run, dst); return dst, dst / 'ckpt' / 'step-00000002'


def test_the_payload_is_live(tmp_path):
    "What every test below plants does run under the full unpickler: the tests would see it."
    m = tmp_path / 'MARKER'; pickle.loads(pickle.dumps(Payload(m)))
    assert m.exists()


def test_one_process_resume_of_a_legacy_state_pt(run, tmp_path, marker):
    legacy = tmp_path / 'legacy'; shutil.copytree(run / 'export', legacy)
    os.remove(legacy / 'manifest.json'); torch.save({'step': 2, 'payload': Payload(marker)}, legacy / 'state.pt')
    one_line_error(rf_ref('train', '--device', 'cpu', '--resume', legacy), f'{legacy}/state.pt', 'refused unread', 'posix.system')


def test_sharded_resume_with_a_metadata_payload(run, tmp_path, marker):
    copy, step = copy_run(run, tmp_path)
    (step / '.metadata').write_bytes(pickle.dumps(Payload(marker))); rehash(step)
    one_line_error(rf_ref('train', '--device', 'cpu', '--resume', copy), f'{step}/.metadata was refused unread', 'posix.system')


def plant_item(step, fqn: str, blob: bytes, as_bytes: bool = False):
    "Point the checkpoint's item `fqn` at `blob`, appended to its shard (`as_bytes`: and declare it a bytes item)."
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex
    md = read_metadata(str(step)); shard = step / '__0_0.distcp'; start = shard.stat().st_size
    shard.write_bytes(shard.read_bytes() + blob)
    md.storage_data[MetadataIndex(fqn)] = _StorageInfo(shard.name, start, len(blob))
    if as_bytes: md.state_dict_metadata[fqn] = BytesStorageMetadata()
    (step / '.metadata').write_bytes(pickle.dumps(md)); rehash(step)


@pytest.mark.parametrize('fqn, as_bytes, says', [
    ('optimizer.param_groups.0.lr', False, 'item optimizer.param_groups.0.lr was refused unread'),  # a bytes item of the save
    ('model.pix_embed.weight', True, 'stores tensor model.pix_embed.weight as pickled bytes'),      # a weight called bytes
])
def test_sharded_resume_with_a_bytes_item_payload(run, tmp_path, marker, fqn, as_bytes, says):
    copy, step = copy_run(run, tmp_path)
    plant_item(step, fqn, torch_saved(Payload(marker)), as_bytes)
    one_line_error(rf_ref('train', '--device', 'cpu', '--resume', copy), str(step), says)


@pytest.mark.parametrize('cmd', ['sample', 'eval'])
def test_sample_and_eval_of_folders_holding_payloads(run, tmp_path, marker, cmd):
    step = tmp_path / 'lone' / 'ckpt' / 'step-00000002'; shutil.copytree(run / 'ckpt' / 'step-00000002', step)   # no export beside
    (step / '.metadata').write_bytes(pickle.dumps(Payload(marker))); rehash(step)
    weights = tmp_path / 'weights'; shutil.copytree(run / 'export', weights)
    (weights / 'ema.safetensors').write_bytes(pickle.dumps(Payload(marker))); rehash(weights)   # a pickle named .safetensors
    args = ['--prompt', 'a red circle', '--out', tmp_path / 'x.png'] if cmd == 'sample' else ['--out', tmp_path / 'x.json']
    one_line_error(rf_ref(cmd, '--ckpt', step, '--device', 'cpu', *args) if cmd == 'sample' else
                   rf_ref(cmd, '--ckpt', step, *args), str(step))
    one_line_error(rf_ref(cmd, '--ckpt', weights, *args), f'{weights}/ema.safetensors cannot be read')


def test_export_sharded_of_a_payload(run, tmp_path, marker):
    _, step = copy_run(run, tmp_path)
    (step / '.metadata').write_bytes(pickle.dumps(Payload(marker))); rehash(step)
    with pytest.raises(CheckpointError, match=r'\.metadata was refused unread: it calls posix\.system'):
        export_sharded(str(step), str(tmp_path / 'export'))
    assert not (tmp_path / 'export').exists() and not [n for n in os.listdir(tmp_path) if n.startswith('.export')]


def cifar(tmp_path, batch, name='data_batch_1'):
    "A CIFAR-10 fixture whose `name` pickles `batch`."
    root = write_cifar10_fixture(str(tmp_path / 'cifar10'))
    with open(f'{root}/cifar-10-batches-py/{name}', 'wb') as f: pickle.dump(batch, f, protocol=2)
    return root


@pytest.mark.parametrize('cmd', ['train', 'preview', 'pretrain-ssl'])
def test_cifar10_batch_payload(tmp_path, marker, cmd):
    root = cifar(tmp_path, {'data': Payload(marker), 'labels': [0] * 10})
    args = {'train': ['train', '--preset', 'cifar10-tiny', '--device', 'cpu', '--out', tmp_path / 'run', f'data.root={root}'],
            'preview': ['preview', '--cifar10', root, '--out', tmp_path / 'preview'],
            'pretrain-ssl': ['pretrain-ssl', '--preset', 'cifar10-tiny', '--steps', '1', '--out', tmp_path / 'ssl.safetensors',
                             '--device', 'cpu', f'data.root={root}']}[cmd]
    one_line_error(rf_ref(*args), f'{root}/cifar-10-batches-py/data_batch_1 was refused unread: it calls posix.system')
    assert not (tmp_path / 'preview').exists() and not (tmp_path / 'ssl.safetensors').exists()


TEN = np.zeros((10, 3072), np.uint8)

@pytest.mark.parametrize('batch, says', [
    ({'data': TEN, 'labels': [99] + [0] * 9}, 'has label 99 for image 0; CIFAR-10 labels are the integers 0 to 9'),
    ({'data': TEN, 'labels': [1, 2, 3]}, 'has 3 labels for 10 images'),
    ([TEN, [0] * 10], "holds a list, not the release's dict of data and labels"),
    ({'data': TEN, 'labels': [0] * 9 + [-3]}, 'has label -3 for image 9'),
    ({'data': TEN.reshape(10, 32, 96), 'labels': [0] * 10}, 'has data uint8 (10, 32, 96)'),
])
def test_bad_cifar10_batches(tmp_path, batch, says):
    root = cifar(tmp_path, batch)
    one_line_error(rf_ref('preview', '--cifar10', root, '--out', tmp_path / 'preview'), f'{root}/cifar-10-batches-py/data_batch_1', says)


def test_negative_cifar10_label_does_not_train(tmp_path):
    "-3 used to train as class 7 (horse), wrapped by Python's indexing."
    root = cifar(tmp_path, {'data': TEN, 'labels': [-3] + [0] * 9})
    one_line_error(rf_ref('train', '--preset', 'cifar10-tiny', '--device', 'cpu', '--out', tmp_path / 'run', f'data.root={root}'),
                   'data_batch_1 has label -3 for image 0')
    assert not (tmp_path / 'run' / 'ckpt').exists()


def test_bad_imagenet64_labels_and_class_names(tmp_path):
    root = write_imagenet64_fixture(str(tmp_path / 'inet'))
    np.savez(f'{root}/train_data_batch_1.npz', data=np.zeros((3, 12288), np.uint8), labels=[5.0, float('nan'), 7.0])
    one_line_error(rf_ref('preview', '--imagenet64', root, '--out', tmp_path / 'p'), f'{root}/train_data_batch_1.npz has label nan for image 1')
    write_imagenet64_fixture(root)
    with open(f'{root}/map_clsloc.txt', 'ab') as f: f.write('n99999999 1001 caf\xe9\n'.encode('latin1'))
    one_line_error(rf_ref('preview', '--imagenet64', root, '--out', tmp_path / 'p'), f'{root}/map_clsloc.txt is not UTF-8 text')

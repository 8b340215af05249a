"""Bad input through the installed `rf-ref` command: one line on stderr, no traceback, a non-zero exit; --debug shows it.
(The full table of bad inputs runs in-process in nbs/90_cli.ipynb.)"""
import os
from cli import one_line_error, rf_ref


def test_non_utf8_prompt_bytes(tmp_path):
    r = rf_ref(b'sample', b'--ckpt', b'data/rf_shapes-tiny', b'--prompt', b'a red \xffcircle', b'--out', os.fsencode(tmp_path / 'x.png'))
    one_line_error(r, 'prompt 1 is not valid UTF-8 (byte 0xff at character 6)')
    assert not (tmp_path / 'x.png').exists()


def test_bad_value_one_line_and_debug_traceback():
    one_line_error(rf_ref(b'train', b'train.batch_size=abc'), "train.batch_size='abc' is not an integer")
    r = rf_ref(b'--debug', b'train', b'train.batch_size=abc')
    assert r.returncode != 0 and 'Traceback' in r.stderr and "train.batch_size='abc' is not an integer" in r.stderr


def test_over_long_prompt_warns_and_says_what_was_kept(tmp_path):
    r = rf_ref(b'sample', b'--ckpt', b'data/rf_shapes-tiny', b'--prompt', b' '.join([b'a red circle'] * 30), b'--n', b'1',
               b'--sample-steps', b'2', b'--device', b'cpu', b'--out', os.fsencode(tmp_path / 'x.png'))
    err = r.stderr
    assert r.returncode == 0, err[-2000:]
    assert 'warning: prompt 1 is 90 tokens long; data.max_text_len=40 keeps the first 38' in err, err
    assert (tmp_path / 'x.png').exists()

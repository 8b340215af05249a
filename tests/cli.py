"""Running the installed `rf-ref` as a user does, and what the tests ask of a refused command; shared by the test files."""
import json, os, subprocess
from conftest import ROOT, BIN

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}


def rf_ref(*args, cwd=ROOT, env=None):
    "`rf-ref ARGS` as a process (bytes arguments pass as they are: the tests of undecodable input use them)."
    args = [a if isinstance(a, bytes) else str(a) for a in args]
    r = subprocess.run([os.fsencode(BIN / 'rf-ref'), *map(os.fsencode, args)], capture_output=True, env={**ENV, **(env or {})}, cwd=cwd)
    r.stdout, r.stderr = (s.decode('utf-8', 'replace') for s in (r.stdout, r.stderr))
    return r


def one_line_error(r, *says) -> str:
    "Exit 2, no traceback, exactly one `error:` line, and it says each of `says`; that line."
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if ': error: ' in l]
    assert len(lines) == 1 and all(s in lines[0] for s in says), (says, r.stderr[-3000:])
    return lines[0]


def rehash(folder):
    "Rewrite a checkpoint's manifest to match the files in `folder`, as whoever damaged or planted a file there would."
    from rf_ref.core.checkpoint import sha256
    mf = os.path.join(folder, 'manifest.json'); m = json.load(open(mf))
    m['files'] = {n: {'bytes': os.path.getsize(os.path.join(folder, n)), 'sha256': sha256(os.path.join(folder, n))}
                  for n in sorted(os.listdir(folder)) if n != 'manifest.json' and os.path.isfile(os.path.join(folder, n))}
    json.dump(m, open(mf, 'w'))

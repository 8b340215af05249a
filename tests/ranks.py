"""Run a test's body on several CPU processes joined by gloo, as a distributed run's ranks: `spawn(body, *args)` calls
`body(rank, world, *args)` on each rank and fails if any rank raised or died."""
import os, socket, sys, traceback
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _rank(rank: int, body, world: int, port: int, args: tuple):
    from rf_ref.scale.launch import close_distributed
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try: body(rank, world, *args)
    except BaseException:   # shown here too: mp.spawn reports the first rank to fail, which may be the other rank's hang-up
        traceback.print_exc(); close_distributed(finished=False); raise
    close_distributed()
    # Leave without the interpreter's finalization: tensors that gloo's threads still hold are freed there, after the
    # interpreter has let go of what they need, which can abort a process whose test passed (pytorch/pytorch#179291).
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)


def spawn(body, *args, world: int = 2):
    "`body(rank, world, *args)` on `world` processes (a module-level function, so the processes can import it)."
    mp.spawn(_rank, args=(body, world, free_port(), args), nprocs=world)

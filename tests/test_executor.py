"""Hostile-code suite for `aimo2_nb.executor`: every attack ends in a clean non-ok result within timeout + 1 s,
the test process and files outside the sandbox survive, nothing the run spawned remains, the executor keeps working."""
from __future__ import annotations
import os, random, shutil, socket, time, uuid
from pathlib import Path
import pytest
from aimo2_nb.config import ExecConfig
from aimo2_nb.executor import Executor, ExecResult, run_code

TIMEOUT = 2.0
NOBODY = 65534
ROOT = os.geteuid() == 0
REPO = str(Path(__file__).resolve().parents[1])
UID_BASE = 2_000_000_000 + 1024 * random.randrange(1, 100_000)   # a block of sandbox uids no other test run uses
CFG = dict(timeout=TIMEOUT, memory_mb=768, workers=4, output_bytes=4096, uid_base=UID_BASE)


def _sandbox_uids(ex: Executor | None = None) -> set[int]:
    "The uids runs of `ex` take: its block (capabilities['uids'], this test run's own), else 65534."
    block = (ex.capabilities.get('uids') if ex is not None else None) or (NOBODY, 1)
    return set(range(block[0], block[0] + block[1]))


def _uid_procs(uids: set[int] = frozenset({NOBODY})) -> list[int]:
    "Pids of live processes whose real uid is in `uids`."
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try: status = Path(f'/proc/{d}/status').read_text()
        except OSError: continue
        uid_line = next((l for l in status.splitlines() if l.startswith('Uid:')), '')
        state = next((l for l in status.splitlines() if l.startswith('State:')), '')
        if uid_line.split()[1:2] and int(uid_line.split()[1]) in uids and 'Z' not in state.split()[1:2]: out.append(int(d))
    return out


def _children(pid: int) -> list[int]:
    "Pids whose parent is `pid`."
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try: s = Path(f'/proc/{d}/stat').read_bytes()
        except OSError: continue
        if int(s[s.rfind(b')') + 2:].split()[1]) == pid: out.append(int(d))
    return out


def _assert_clean(ex: Executor, wait: float = 1.0) -> None:
    "No sandbox-uid process and no runner of `ex` outlives a finished run."
    end = time.monotonic() + wait
    while True:
        left = (_uid_procs(_sandbox_uids(ex)) if ex.isolation != 'guard' else []) + _children(ex._zygote.proc.pid)
        if not left: return
        assert time.monotonic() < end, f'processes left behind: {left}'
        time.sleep(0.02)


def _still_works(ex: Executor) -> None:
    r = ex.submit('print(6 * 7)').result()
    assert r.ok and r.stdout == '42\n', r


@pytest.fixture(scope='module')
def ex():
    with Executor(ExecConfig(**CFG)) as e: yield e


@pytest.fixture(scope='module')
def ex_uid():
    if not ROOT: pytest.skip('the uid level needs root')
    with Executor(ExecConfig(**CFG, isolation='uid')) as e:
        assert e.isolation == 'uid'
        yield e


@pytest.fixture(scope='module')
def ex_guard():
    with Executor(ExecConfig(**CFG, isolation='guard')) as e:
        assert e.isolation == 'guard'
        yield e


@pytest.fixture
def victims():
    "A file and a folder (with a file) outside the sandbox, owned by the test, readable by all."
    tag = uuid.uuid4().hex[:8]
    f = Path(f'/tmp/aimo2-victim-{tag}.txt'); f.write_text('keep'); f.chmod(0o644)
    d = Path(f'/tmp/aimo2-victim-dir-{tag}'); d.mkdir(); d.chmod(0o755); (d / 'x.txt').write_text('keep')
    new = Path(f'/tmp/aimo2-new-{tag}.txt')
    yield dict(victim=str(f), victim_dir=str(d), new=str(new), repo=REPO)
    assert f.read_text() == 'keep' and (d / 'x.txt').read_text() == 'keep', 'a file outside the sandbox was harmed'
    assert not new.exists() and not Path(REPO, f'pwned-{tag}').exists()
    f.unlink(); shutil.rmtree(d)


@pytest.fixture
def listener():
    "A listening loopback port the code tries to reach."
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); s.settimeout(0.05)
    yield s
    with pytest.raises(TimeoutError): s.accept()   # nobody got through
    s.close()


ATTACKS = {
    'infinite loop': 'while True: pass',
    'fork bomb': 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass',
    'subprocess bomb': 'import subprocess\nwhile True:\n    try: subprocess.Popen(["sleep", "100"])\n    except OSError: pass',
    'memory bomb': 'a = []\nwhile True: a.append(bytearray(1 << 24))',
    'numpy memory bomb': 'x = np.ones(10**11)',
    'stdout flood': 'while True: print("x" * 1000)',
    'stderr flood': 'import sys\nwhile True: sys.stderr.write("y" * 1000)',
    'disk flood': 'with open("big", "wb") as f:\n    while True: f.write(b"0" * (1 << 20))',
    'overwrite outside': 'open({victim!r}, "w").write("pwned")',
    'create in /tmp': 'open({new!r}, "w").write("pwned")',
    'write to repo': 'open({repo!r} + "/pwned-" + {new!r}[-12:-4], "w").write("pwned")',
    'delete outside': 'import os\nos.remove({victim!r})',
    'rmtree outside': 'import shutil\nshutil.rmtree({victim_dir!r})',
    'network': 'import socket\nsocket.create_connection(("127.0.0.1", {port}), timeout=1)',
    'raw socket': 'import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.connect(("127.0.0.1", {port}))',
    'kill parent': 'import os\nos.kill(os.getppid(), 9)\nwhile True: pass',
    'kill test process': 'import os\nos.kill({test_pid}, 9)\nwhile True: pass',
    'kill everything': 'import os\nos.kill(-1, 9)\nwhile True: pass',
    'deep recursion': 'import sys\nsys.setrecursionlimit(10**6)\ndef f(n): return f(n + 1) + 1\nf(0)',
    'segfault': 'import ctypes\nctypes.string_at(0)',
    'sys.exit(3)': 'print("partial")\nimport sys\nsys.exit(3)',
    'ignore SIGTERM': 'import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass',
}


def _attack(ex: Executor, name: str, victims: dict, listener: socket.socket) -> ExecResult:
    code = ATTACKS[name].format(port=listener.getsockname()[1], test_pid=os.getpid(), **victims)
    t = time.monotonic()
    r = ex.submit(code).result()
    elapsed = time.monotonic() - t
    assert not r.ok, (name, r)
    assert elapsed < TIMEOUT + 1.0, (name, elapsed, r)
    assert r.status in ('error', 'timeout') and r.error, r
    assert len(r.stdout.encode()) <= CFG['output_bytes'] and len(r.stderr.encode()) <= CFG['output_bytes']
    assert r.isolation == ex.isolation
    _assert_clean(ex)
    _still_works(ex)
    return r


@pytest.mark.parametrize('name', list(ATTACKS))
def test_attack(ex, name, victims, listener):
    r = _attack(ex, name, victims, listener)
    if 'flood' in name and name != 'disk flood': assert r.truncated and r.timed_out
    if name == 'segfault' and ex.isolation != 'guard': assert r.error == 'killed by SIGSEGV' and r.returncode == -11
    if name == 'sys.exit(3)': assert (r.error, r.returncode, r.stdout) == ('exit status 3', 3, 'partial\n')
    if name == 'numpy memory bomb': assert r.error == 'MemoryError'


@pytest.mark.parametrize('name', ['fork bomb', 'subprocess bomb', 'overwrite outside', 'delete outside', 'kill parent',
                                  'kill test process', 'network'])
def test_attack_uid_level(ex_uid, name, victims, listener):
    _attack(ex_uid, name, victims, listener)


@pytest.mark.parametrize('name', ['network', 'raw socket', 'overwrite outside', 'create in /tmp', 'write to repo',
                                  'delete outside', 'rmtree outside', 'kill parent', 'kill test process', 'fork bomb',
                                  'subprocess bomb', 'infinite loop'])
def test_attack_guard_level(ex_guard, name, victims, listener):
    r = _attack(ex_guard, name, victims, listener)
    if name in ('network', 'raw socket', 'create in /tmp', 'kill test process'):
        assert r.error == 'PermissionError' and 'sandbox:' in r.stderr, r


def test_background_process_is_killed(ex):
    r = ex.submit('import subprocess\nsubprocess.Popen(["sleep", "100"])\nprint("bye")').result()
    assert r.ok and r.stdout == 'bye\n'
    _assert_clean(ex)


def test_background_process_is_killed_uid(ex_uid):
    r = ex_uid.submit('import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\nprint("bye")').result()
    assert r.ok and r.stdout == 'bye\n'
    _assert_clean(ex_uid)


def test_normal_code(ex):
    r = ex.submit('print(sp.factorint(2**64 - 1)); print(int(np.arange(10).sum()), math.gcd(12, 18))').result()
    assert r.ok and r.returncode == 0 and r.error is None and not r.truncated
    assert r.stdout == '{3: 1, 5: 1, 17: 1, 257: 1, 641: 1, 65537: 1, 6700417: 1}\n45 6\n'
    r = ex.submit('from fractions import Fraction\nimport heapq, statistics\nprint(Fraction(1, 3) + Fraction(1, 6))').result()
    assert r.ok and r.stdout == '1/2\n', r


def test_files_inside_sandbox(ex):
    r = ex.submit('open("a.txt", "w").write("hi")\nimport os, tempfile\nprint(open("a.txt").read(), os.getcwd(), tempfile.gettempdir())').result()
    assert r.ok and r.stdout == 'hi <sandbox> <sandbox>\n', r


def test_sys_exit_zero_is_ok(ex):
    r = ex.submit('print(7)\nimport sys\nsys.exit(0)').result()
    assert r.ok and r.stdout == '7\n'


def test_errors_and_scrubbed_traceback(ex):
    r = ex.submit('x = 1\ny = x / 0').result()
    assert (r.status, r.error, r.returncode) == ('error', 'ZeroDivisionError', 1)
    assert 'line 2' in r.stderr and 'y = x / 0' in r.stderr
    r = ex.submit('open("f", "w").write("1")\nraise ValueError(open("f").name + " " + __import__("os").getcwd())').result()
    assert 'aimo2-exec' not in r.stderr and '<sandbox>' in r.stderr
    assert ex.submit('print(').result().error == 'SyntaxError'
    assert ex.submit('input()').result().error == 'EOFError'


def test_fresh_state(ex):
    assert ex.submit('x = 41\nimport math\nmath.pi = 3').result().ok
    r = ex.submit('print(math.pi)\nprint(x)').result()
    assert r.stdout.startswith('3.14159') and r.error == 'NameError'


def test_concurrency_overlaps(ex):
    t = time.monotonic()
    futs = [ex.submit('import time\ntime.sleep(1)\nprint(1)') for _ in range(4)]
    assert all(f.result().ok for f in futs)
    assert time.monotonic() - t < 1.9


def test_queue_beyond_workers(ex):
    t = time.monotonic()
    futs = [ex.submit('import time\ntime.sleep(0.5)') for _ in range(6)]   # 4 workers: two waves
    assert all(f.result().ok for f in futs)
    assert 0.95 < time.monotonic() - t < 2.0


def test_submit_returns_at_once(ex):
    t = time.monotonic()
    fut = ex.submit('import time\ntime.sleep(0.5)')
    assert time.monotonic() - t < 0.05 and not fut.done()
    assert fut.result().ok


def test_zygote_restarts(ex):
    inflight = ex.submit('import time\ntime.sleep(0.5)\nprint("done")')
    time.sleep(0.2)
    old = ex._zygote.proc.pid
    os.kill(old, 9)
    assert inflight.result().stdout == 'done\n'   # a forked run does not depend on the zygote
    _still_works(ex)
    assert ex._zygote.proc.pid != old


def test_close_cancels():
    e = Executor(ExecConfig(**{**CFG, 'workers': 1}))
    running = e.submit('while True: pass', timeout=30)
    queued = e.submit('print(1)')
    time.sleep(0.3)
    t = time.monotonic()
    e.close()
    assert time.monotonic() - t < 2.5
    assert running.result().error == 'cancelled' and queued.result().error == 'executor closed'
    assert e.submit('print(1)').result().error == 'executor closed'
    if e.isolation != 'guard': assert not _uid_procs(_sandbox_uids(e))


def test_run_code():
    r = run_code('print(math.factorial(10))', timeout=5, cfg=ExecConfig(**CFG))
    assert r.ok and r.stdout == '3628800\n'

"""Isolation between runs and from the host, at every level this machine can force (issue 12).

Each attack first disarms the in-process audit hook (`DISARM`: what hostile code can always do, see the `guard`
level), so that what is tested is what the kernel enforces: uids, rlimits, namespaces, seccomp, cleanup."""
from __future__ import annotations
import logging, os, random, shutil, socket, tempfile, time, uuid
from pathlib import Path
import pytest
from aimo2_nb.config import ExecConfig
from aimo2_nb.executor import Executor

ROOT = os.geteuid() == 0
CFG = dict(timeout=5.0, memory_mb=768, workers=2, output_bytes=8192, uid_base=2_000_000_000 + 1024 * random.randrange(1, 100_000))
SECRET = 'AIMO2_TEST_SECRET_' + uuid.uuid4().hex[:6]

from doubles.disarm import DISARM  # noqa: E402  (tests/ is on pytest's path)


def _levels() -> list:
    lv = ['guard']
    if ROOT: lv += ['uid', 'namespace']
    return lv


def _executor_at(level: str):
    "An executor at `level` with the parent's secret in its environment (skipped where the level is not available)."
    os.environ[SECRET] = 'k3y'
    try:
        with Executor(ExecConfig(**CFG, isolation=level if level != 'namespace' else 'auto')) as e:
            if e.isolation != level: pytest.skip(f'level {level} not available here')
            yield e
    finally: os.environ.pop(SECRET, None)


@pytest.fixture(scope='module', params=_levels())
def ex(request):
    yield from _executor_at(request.param)


@pytest.fixture(scope='module', params=[lv for lv in _levels() if lv != 'guard'] or ['uid'])
def iso(request):
    "An executor at a level that isolates runs from each other (guard runs everything as the caller: nothing to test)."
    yield from _executor_at(request.param)


def _run(ex: Executor, code: str, timeout: float | None = None):
    return ex.submit(DISARM + code, timeout).result()


def test_disarm_works(ex):
    "The audit hook alone holds nothing: after DISARM a write outside the work folder gets past it."
    r = _run(ex, 'open("/proc/self/comm", "w")')   # refused by the hook before DISARM; by the kernel (EACCES or ok) after
    assert 'sandbox:' not in r.stderr, r


# 1. Environment ---------------------------------------------------------------------------------------------------
def test_environment_is_clean(ex):
    code = ('import os\nprint(sorted(os.environ))\nn = 0\nfor p in ("/proc/self/environ", f"/proc/{os.getppid()}/environ"):\n'
            '    try: n += open(p, "rb").read().count(%r)\n    except OSError: pass\nprint(n)' % SECRET.encode())
    r = _run(ex, code)
    assert r.ok, r
    names, seen = r.stdout.splitlines()
    assert SECRET not in names and seen == '0', r.stdout
    extra = set(eval(names)) - {'PATH', 'HOME', 'LANG', 'LC_ALL', 'TMPDIR', 'PWD', 'USER', 'LOGNAME', 'PYTHONPATH', 'PYTHONHOME',
                                'PYTHONDONTWRITEBYTECODE', 'PYTHONIOENCODING', 'OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS',
                                'MKL_NUM_THREADS'}
    assert not extra, extra


# 2. One uid per run -----------------------------------------------------------------------------------------------
def _pair(ex: Executor, first: str, second: str, gap: float = 0.5):
    "Start `first`, then `second` `gap` seconds later; both results."
    a = ex.submit(DISARM + first)
    time.sleep(gap)
    b = ex.submit(DISARM + second)
    return a.result(), b.result()


def test_concurrent_runs_have_distinct_uids(iso):
    ex = iso
    a, b = _pair(ex, 'import os, time\nprint(os.getuid(), os.getgid())\ntime.sleep(1)', 'import os\nprint(os.getuid(), os.getgid())')
    assert a.ok and b.ok and a.stdout != b.stdout, (a, b)
    assert all(int(x) != 0 for x in a.stdout.split() + b.stdout.split())


def test_cannot_plant_module_in_other_run(iso):
    ex = iso
    victim = 'open("ans.txt", "w").write("2")\nimport time\ntime.sleep(1.5)\nimport colorsys\nprint(colorsys.ONE_THIRD, open("ans.txt").read())'
    attacker = ('import glob, os\nn = 0\nfor d in glob.glob("/tmp/aimo2-*") + glob.glob("/tmp/aimo2-*/*"):\n'
                '    try: open(os.path.join(d, "colorsys.py"), "w").write("ONE_THIRD = 666\\n"); open(os.path.join(d, "ans.txt"), "w").write("666"); n += 1\n'
                '    except OSError: pass\nprint(n)')
    a, b = _pair(ex, victim, attacker)
    assert a.ok and a.stdout.startswith('0.333') and a.stdout.endswith(' 2\n'), (a, b)


def test_cannot_kill_other_run(iso):
    ex = iso
    victim = 'import time\ntime.sleep(1.5)\nprint("alive")'
    attacker = ('import os, signal\nfor p in os.listdir("/proc"):\n    if p.isdigit() and int(p) != os.getpid():\n'
                '        try: os.kill(int(p), signal.SIGKILL)\n        except OSError: pass')
    a, b = _pair(ex, victim, attacker)
    assert a.ok and a.stdout == 'alive\n', a


def test_process_limit_is_per_run(iso):
    ex = iso
    hog = 'import os, time\nkids = 0\nwhile True:\n    try: pid = os.fork()\n    except OSError: break\n    if pid == 0: time.sleep(3); os._exit(0)\n    kids += 1\ntime.sleep(3)'
    victim = 'import threading\nt = threading.Thread(target=print, args=("thread",)); t.start(); t.join()\nimport subprocess\nprint(subprocess.run(["true"]).returncode)'
    a, b = _pair(ex, hog, victim, gap=1.0)
    assert b.ok and b.stdout == 'thread\n0\n', b


# 3. Nothing left behind -----------------------------------------------------------------------------------------------
def test_files_outside_the_work_folder_are_removed(iso):
    ex = iso
    tag = uuid.uuid4().hex[:8]
    places = [f'/tmp/aimo2-leak-{tag}', f'/dev/shm/aimo2-leak-{tag}', f'/var/tmp/aimo2-leak-{tag}']
    code = ''.join(f'try: open({p!r}, "wb").write(b"x" * (1 << 20))\nexcept OSError as e: print(e)\n' for p in places)
    code += (f'import os\ntry:\n    os.makedirs("/tmp/aimo2-leakdir-{tag}/a/b")\n    open("/tmp/aimo2-leakdir-{tag}/a/b/f", "w").write("x")\n'
             'except OSError as e: print(e)\n')   # refused where Landlock confines writes, else removed after the run
    r = _run(ex, code)
    assert r.ok, r
    left = [p for p in places + [f'/tmp/aimo2-leakdir-{tag}'] if os.path.lexists(p)]
    assert not left, left


def test_shm_memory_is_released(iso):
    "RAM in /dev/shm is outside the run's memory limit: what a run puts there goes with the run."
    ex = iso
    tag = uuid.uuid4().hex[:8]
    r = _run(ex, f'for i in range(6): open(f"/dev/shm/aimo2-{tag}-{{i}}", "wb").write(b"x" * (48 << 20))\nprint("ok")')
    assert r.ok and r.stdout == 'ok\n', r
    assert not [n for n in os.listdir('/dev/shm') if n.startswith(f'aimo2-{tag}')]


def test_later_run_cannot_read_earlier_files(iso):
    ex = iso
    tag = uuid.uuid4().hex[:8]
    _run(ex, f'open("/tmp/aimo2-note-{tag}", "w").write("secret")')   # refused (Landlock) or removed after the run
    r = _run(ex, f'print(open("/tmp/aimo2-note-{tag}").read())')
    assert not r.ok and 'FileNotFoundError' in (r.error or ''), r


def test_deep_folders_and_renamed_work_folder_are_removed(iso):
    ex = iso
    code = ('import os\nhere = os.getcwd()\nprint(here[::-1])\nfor i in range(1200): os.mkdir("d"); os.chdir("d")\n'
            'open("deep", "w").write("x")\nos.chdir("/")\n'
            'try: os.rename(here, here + "-moved"); print("moved")\nexcept OSError as e: print(type(e).__name__)\n')
    r = _run(ex, code)
    assert r.ok, r
    workdir = r.stdout.splitlines()[0][::-1]
    assert not os.path.lexists(workdir) and not os.path.lexists(workdir + '-moved'), r.stdout


def test_run_folder_parent_not_writable(iso):
    ex = iso
    r = _run(ex, 'import os\nup = os.path.dirname(os.getcwd())\nprint(os.access(up, os.W_OK), oct(os.stat(up).st_mode & 0o7777))')
    assert r.ok and r.stdout.split()[0] == 'False', r


# 4. Network ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def listeners():
    "A loopback TCP port, an abstract unix socket and a world-writable unix socket file the code tries to reach."
    tag = uuid.uuid4().hex[:8]
    tcp = socket.socket(); tcp.bind(('127.0.0.1', 0)); tcp.listen()
    abstract = socket.socket(socket.AF_UNIX); abstract.bind(f'\0aimo2-test-{tag}'); abstract.listen()
    path = f'/tmp/aimo2-test-{tag}.sock'
    fs = socket.socket(socket.AF_UNIX); fs.bind(path); fs.listen(); os.chmod(path, 0o777)
    socks = [tcp, abstract, fs]
    for s in socks: s.settimeout(0.05)
    try:
        yield dict(port=tcp.getsockname()[1], abstract=f'\0aimo2-test-{tag}', path=path)
        for s in socks:
            with pytest.raises(TimeoutError): s.accept()   # nobody got through
    finally:
        for s in socks: s.close()
        os.unlink(path)


NET = {
    'tcp': 'import socket\ns = socket.socket(); s.settimeout(1); s.connect(("127.0.0.1", {port}))',
    'abstract unix': 'import socket\ns = socket.socket(socket.AF_UNIX); s.connect({abstract!r})',
    'unix file': 'import socket\ns = socket.socket(socket.AF_UNIX); s.connect({path!r})',
    'dgram socketpair sendto': 'import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\na.sendto(b"x", {path!r})',
}


@pytest.mark.parametrize('name', list(NET))
def test_network_is_denied(ex, name, listeners):
    r = _run(ex, NET[name].format(**listeners))
    assert not r.ok, r


def test_socketpair_stream_still_works(ex):
    r = _run(ex, 'import socket\na, b = socket.socketpair()\na.sendall(b"hi")\nprint(b.recv(2).decode())')
    assert r.ok and r.stdout == 'hi\n', r


def test_io_uring_denied(ex):
    r = _run(ex, 'import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nimport ctypes as c\np = c.create_string_buffer(120)\n'
                 'fd = libc.syscall(425, 8, p)\nprint(fd)')
    assert r.ok and int(r.stdout) < 0, r


# 5. Status channel --------------------------------------------------------------------------------------------------
def _status_writes(payload: bytes) -> str:
    "Code writing `payload` to every pipe it holds but stdout and stderr."
    return ('import os, stat\nfor fd in range(3, 64):\n    try:\n        if stat.S_ISFIFO(os.fstat(fd).st_mode): os.write(fd, %r)\n'
            '    except OSError: pass\n' % payload)


def test_forged_status_does_not_pass(ex):
    r = _run(ex, 'print("partial")\n' + _status_writes(b'W 0\nE None\n') + 'raise SystemExit(5)')
    assert not r.ok and r.returncode == 5 and r.stdout == 'partial\n', r


def test_malformed_status_keeps_output(ex):
    r = _run(ex, 'print("kept")\n' + _status_writes('W \u00b2\nW 99999999999999999999999\nE \udcff\n'.encode('utf-8', 'surrogateescape')))
    assert r.ok and r.stdout == 'kept\n', r


# 6. guard is loud -----------------------------------------------------------------------------------------------------
def test_guard_level_is_loud(caplog):
    with caplog.at_level(logging.WARNING):
        with Executor(ExecConfig(**CFG, isolation='guard')) as e:
            r = e.submit('print(1)').result()
    assert r.isolation == 'guard' and r.ok
    assert any('not a sandbox' in m.lower() for m in caplog.messages), caplog.messages


def test_serve_path_reports_the_level():
    "The Kaggle server logs this line when it warms the executor: the level Kaggle granted."
    from aimo2_nb.kaggle import _LazyExecutor
    for level in ('guard', 'auto'):
        lz = _LazyExecutor(ExecConfig(**CFG, isolation=level))
        lz.warm()
        try:
            line = lz.describe()
            assert line.startswith(f'executor: isolation {lz.ex.isolation!r}')
            assert ('not a sandbox' in line.lower()) == (lz.ex.isolation == 'guard'), line
        finally: lz.ex.close()


def test_socket_buffers_are_bounded(ex):
    "Kernel buffers are outside RLIMIT_AS: socket pairs filled to the brim hold little (no SO_SNDBUF, few descriptors)."
    code = '''
import socket
total, pairs = 0, []
try:
    while True:
        a, b = socket.socketpair(); a.setblocking(False); pairs.append((a, b))
        for s, opt in ((a, socket.SO_SNDBUF), (b, socket.SO_RCVBUF)):
            try: s.setsockopt(socket.SOL_SOCKET, opt, 1 << 30)
            except OSError: pass
        try:
            while True: total += a.send(b"x" * 65536)
        except BlockingIOError: pass
        if total > 1 << 30: break
except OSError: pass
print(len(pairs), total >> 20)
'''
    r = _run(ex, code, timeout=20)
    assert r.ok, r
    _, mb = map(int, r.stdout.split())
    assert mb < 128, r.stdout


@pytest.fixture
def reachable_tmp():
    "A folder under /tmp that every uid may enter (pytest's tmp_path is root's, mode 0700)."
    d = Path(tempfile.mkdtemp(prefix='aimo2-reach-')); d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_world_writable_folder_is_out_of_reach(ex, reachable_tmp):
    "A 0777 folder without the sticky bit (a working folder) would let any uid replace the files in it."
    work = reachable_tmp / 'working'; work.mkdir(); work.chmod(0o777)
    sub = work / 'submission.parquet'; sub.write_text('ours'); sub.chmod(0o644)
    if not ex.capabilities.get('landlock'): pytest.skip('no Landlock here: a 0777 folder stays writable by the sandbox uid')
    code = (f'import os\nfor f in (lambda: os.replace({str(sub)!r}, {str(work / "x")!r}), lambda: os.unlink({str(sub)!r}),\n'
            f'          lambda: open({str(work / "new")!r}, "w").write("x"), lambda: open({str(sub)!r}, "w").write("theirs")):\n'
            '    try: f(); print("done")\n    except OSError as e: print(type(e).__name__)')
    r = _run(ex, code)
    assert r.ok and 'done' not in r.stdout, r
    assert sub.read_text() == 'ours' and sorted(p.name for p in work.iterdir()) == ['submission.parquet']

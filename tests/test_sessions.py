"""Persistent executor sessions (issue 16): state kept across calls and lost on a crash, the hostile-code suite run
against sessions, and the attacks sessions add: one session reaching another, a call leaving a process, thread or
timer running into the next, state surviving a reset. Helpers and fixtures come from test_executor/test_sandbox."""
from __future__ import annotations
import os, random, subprocess, sys, textwrap, time, uuid
import pytest
from aimo2_nb.config import ExecConfig
from aimo2_nb.executor import Executor, ExecSession

import test_executor as te   # tests/ is on pytest's path
import test_sandbox as ts
victims, listener = te.victims, te.listener  # fixtures of test_executor, found by pytest under these names
from doubles.disarm import DISARM

CFG = dict(te.CFG, uid_base=2_000_000_000 + 1024 * random.randrange(1, 100_000))   # a uid block of this module's own


def _executor_at(level: str):
    "An executor at `level` (skipped where the level is not available)."
    with Executor(ExecConfig(**CFG, isolation=level if level != 'namespace' else 'auto')) as e:
        if e.isolation != level: pytest.skip(f'level {level} not available here')
        yield e


@pytest.fixture(scope='module', params=ts._levels())
def ex(request):
    yield from _executor_at(request.param)


@pytest.fixture(scope='module', params=[lv for lv in ts._levels() if lv != 'guard'] or ['uid'])
def iso(request):
    "An executor at a level that isolates sessions from each other (guard runs everything as the caller)."
    yield from _executor_at(request.param)


@pytest.fixture(scope='module')
def auto():
    "An executor at the strongest level this machine has."
    with Executor(ExecConfig(**CFG)) as e: yield e


@pytest.fixture
def sess(ex):
    with ex.session() as s: yield s


def _call(s: ExecSession, code: str, timeout: float | None = None):
    return s.submit(code, timeout).result()


def _clean_after(ex: Executor, *sessions: ExecSession) -> None:
    "Close `sessions`; then nothing of them is left: no sandbox-uid process, no runner."
    for s in sessions: s.close()
    te._assert_clean(ex, wait=3.0)


# State ----------------------------------------------------------------------------------------------------------------
def test_state_is_kept(sess):
    assert _call(sess, 'import fractions\nfrom itertools import count\ndef sq(n): return n * n\nx = sq(7)\nopen("note", "w").write("kept")').ok
    r = _call(sess, 'print(x, sq(3), fractions.Fraction(1, 3), next(count(5)), open("note").read(), np.int64(2) + 1)')
    assert (r.status, r.stdout, r.restarted) == ('ok', '49 9 1/3 5 kept 3\n', False), r


def test_error_keeps_state(sess):
    assert _call(sess, 'x = 5').ok
    r = _call(sess, 'y = [1][3]')
    assert (r.error, r.restarted) == ('IndexError', False) and '<code>' in r.stderr, r
    r = _call(sess, 'print(x)')
    assert (r.stdout, r.restarted) == ('5\n', False), r


CRASHES = {
    'timeout': 'while True: pass',
    'segfault': 'import ctypes\nctypes.string_at(0)',
    'sys.exit': 'import sys\nsys.exit(3)',
    'os._exit': 'import os\nos._exit(0)',
    'memory': 'a = []\nwhile True: a.append(bytearray(1 << 24))',
    'kill self': 'import os, signal\nos.kill(os.getpid(), signal.SIGKILL)',
    'cpu limit': 'import resource\nresource.setrlimit(resource.RLIMIT_CPU, (1, resource.RLIM_INFINITY))\nwhile True: pass',
}


@pytest.mark.parametrize('name', list(CRASHES))
def test_crash_loses_state(sess, name):
    "A crash ends the session: its result is an error, the next call runs in a fresh process (restarted) with none of the old globals or files."
    tag = uuid.uuid4().hex[:8]
    r = _call(sess, f'import os\nsecret = "{tag}"\nopen("note", "w").write(secret)\nprint(os.getcwd()[::-1])')
    assert r.ok, r
    old_dir = r.stdout.strip()[::-1]
    r = _call(sess, CRASHES[name], timeout=2)
    assert not r.ok or name == 'os._exit', r
    assert r.restarted is False
    r = _call(sess, 'import os\nprint("secret" in globals(), os.path.exists("note"), os.getcwd() == %r)' % old_dir)
    assert (r.status, r.stdout, r.restarted) == ('ok', 'False False False\n', True), r
    assert not os.path.exists(old_dir)
    r = _call(sess, 'print(math.factorial(4))')   # the preamble ran in the fresh process; later calls are not restarts
    assert (r.stdout, r.restarted) == ('24\n', False), r


def test_memory_limit_holds_across_calls(sess):
    "State piles up across calls, and the one memory limit holds for all of it."
    for _ in range(8):
        r = _call(sess, 'try: keep\nexcept NameError: keep = []\nkeep.append(bytearray(200 << 20))\nprint(len(keep))')
        if not r.ok: break
    assert not r.ok and r.error == 'MemoryError', r
    assert _call(sess, 'print(len(keep))').restarted   # a MemoryError ends the session: its state may be half-made


def test_disk_held_between_calls_is_bounded(sess):
    "Files in the work folder outlive a call: a session holding more than 64 MiB there is ended after the call."
    r = _call(sess, 'x = 1\nfor i in range(3): open(f"f{i}", "wb").write(b"0" * (30 << 20))\nprint("written")')
    assert r.ok and r.stdout == 'written\n', r
    r = _call(sess, 'import os\nprint(sorted(os.listdir(".")), "x" in globals())')
    assert (r.stdout, r.restarted) == ("[] False\n", True), r


def test_parent_never_raises(ex):
    "Odd code, odd output and odd use of the API come back as results, never as exceptions in the caller."
    s = ex.session()
    odd = ['\x00', 'print("\\udcff")', 'import sys\nsys.stdout.buffer.write(b"\\xff\\xfe")', 'x = "' + 'a' * (1 << 20) + '"\nprint(len(x))',
           'raise KeyboardInterrupt', 'raise BaseException("b")', 'import os\nos.close(3)', 'import os\nos.close(4)', 'print(1)']
    for code in odd:
        r = _call(s, code, timeout=3)
        assert r.status in ('ok', 'error', 'timeout'), r
    futs = [s.submit(f'print({i})') for i in range(5)]
    assert [f.result().stdout for f in futs] == [f'{i}\n' for i in range(5)]   # calls of one session run in order
    s.close(); s.close()
    assert s.submit('print(1)').result().error == 'session closed'
    with pytest.raises(ValueError): s.submit('print(1)', timeout=-1)   # a bad timeout is a programming error, as for one-shot runs


def test_close_during_a_call(ex):
    s = ex.session()
    assert _call(s, 'x = 1').ok
    fut = s.submit('import time\ntime.sleep(30)', timeout=60)
    time.sleep(0.3)
    s.close()
    r = fut.result(timeout=10)
    assert (r.status, r.error) == ('error', 'session closed'), r
    te._assert_clean(ex, wait=3.0)


def test_executor_close_closes_sessions():
    with Executor(ExecConfig(**CFG)) as e:
        s = e.session()
        assert _call(s, 'x = 1').ok
        e.prewarm_sessions(1)
        fut = s.submit('import time\ntime.sleep(30)', timeout=60)
        time.sleep(0.3)
        uids = te._sandbox_uids(e)
    assert fut.result(timeout=10).error == 'session closed'
    assert s.submit('print(x)').result().error == 'session closed'
    e.session().close()
    end = time.monotonic() + 3
    while (left := te._uid_procs(uids) if e.isolation != 'guard' else []) and time.monotonic() < end: time.sleep(0.05)
    assert not left, left


def test_slow_session_blocks_nothing(auto):
    "A session busy for a long time blocks neither other sessions nor one-shot runs."
    slow, other = auto.session(), auto.session()
    f = slow.submit('import time\ntime.sleep(60)', timeout=120)
    assert _call(other, 'print(2)').stdout == '2\n'
    assert [auto.submit('print(3)') for _ in range(8)][-1].result().stdout == '3\n'
    assert not f.done()
    _clean_after(auto, slow, other)
    assert f.result().error == 'session closed'


def test_prewarm(auto):
    assert auto.prewarm_sessions(3, wait=True) == 3
    ss = [auto.session() for _ in range(4)]   # one more than the spares
    rs = [s.submit('import os\nprint(os.getuid())') for s in ss]
    assert all(r.result().ok for r in rs)
    if auto.isolation != 'guard': assert len({r.result().stdout for r in rs}) == 4   # a uid per session
    assert auto.prewarm_sessions(3, wait=True) == 3   # refilled
    r = _call(ss[0], 'while True: pass', timeout=0.5)
    r = _call(ss[0], 'print(1)')   # the restart takes a spare
    assert (r.stdout, r.restarted) == ('1\n', True), r
    assert auto.prewarm_sessions(0) == 0
    _clean_after(auto, *ss)


def test_failed_preamble():
    with Executor(ExecConfig(**{**CFG, 'preamble': 'import math\nraise ValueError("bad preamble")'})) as e:
        s = e.session()
        for _ in range(2):
            r = _call(s, 'print(1)')
            assert (r.status, r.error) == ('error', 'ValueError') and 'bad preamble' in r.stderr, r
        s.close()


# Leftovers of a call ----------------------------------------------------------------------------------------------------
def test_child_processes_are_killed_after_each_call(iso):
    "Processes a call starts (plain, detached, double-forked) are gone when its result comes; the session goes on."
    s = iso.session()
    assert _call(s, 'x = 1\nimport os\nprint(os.getuid())').ok
    uid = int(_call(s, 'print(os.getuid())').stdout)
    code = ('import os, subprocess, time\nsubprocess.Popen(["sleep", "100"])\n'
            'if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(0.5); open("mark", "w").write("x")\n    os._exit(0)\n'
            'if os.fork() == 0:\n    time.sleep(0.5); open("mark2", "w").write("x"); os._exit(0)\nprint("started")')
    r = _call(s, code)
    assert r.ok and r.stdout == 'started\n', r
    assert len(te._uid_procs({uid})) == 1   # the session's own process only
    time.sleep(1.0)
    r = _call(s, 'print(x, os.path.exists("mark"), os.path.exists("mark2"))')
    assert (r.stdout, r.restarted) == ('1 False False\n', False), r
    _clean_after(iso, s)


def test_thread_left_running_ends_the_session(ex):
    "A thread still running after its call would run into the next one: the session is restarted instead."
    s = ex.session()
    code = ('import threading, time\ndef spin():\n    while True:\n        time.sleep(0.01)\n        open("t.txt", "a").write("x")\n        print("thread")\n'
            'threading.Thread(target=spin, daemon=True).start()\nx = 1\nprint("main")')
    r = _call(s, code)
    assert r.stdout.startswith('main'), r
    time.sleep(0.5)
    r = _call(s, 'import os\nprint(os.path.exists("t.txt"), "x" in globals())')
    assert (r.stdout, r.restarted) == ('False False\n', True), r
    r = _call(s, 'import threading\nt = threading.Thread(target=print, args=("joined",))\nt.start(); t.join()\ny = 2')
    assert r.ok and r.stdout == 'joined\n', r
    assert _call(s, 'print(y)').restarted is False   # a thread that ended is fine
    _clean_after(ex, s)


def test_nothing_runs_between_calls(ex):
    "A timer or signal handler the code sets does not run while the session waits for its next call (it is stopped)."
    s = ex.session()
    r = _call(s, 'import signal\nticks = [0]\ndef h(*a): ticks[0] += 1\nsignal.signal(signal.SIGALRM, h)\nsignal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)')
    assert r.ok, r
    time.sleep(2.0)   # 100 ticks if it ran on
    r = _call(s, 'signal.setitimer(signal.ITIMER_REAL, 0)\nprint(ticks[0])')
    assert r.ok and int(r.stdout) < 20 and not r.restarted, r   # a few: between the call's end and the stop, and before the next call stops it
    _clean_after(ex, s)


def test_files_outside_the_folder_go_after_each_call(iso):
    "What a call leaves in shared folders goes after that call (RAM in /dev/shm is outside the limit); the work folder stays."
    s = iso.session()
    tag = uuid.uuid4().hex[:8]
    r = _call(s, DISARM + f'import os\nfor p in ("/tmp/aimo2-s-{tag}", "/dev/shm/aimo2-s-{tag}"):\n'
                 f'    try: open(p, "wb").write(b"x" * (8 << 20))\n    except OSError: pass\nopen("mine", "w").write("k")')
    assert r.ok, r
    assert not os.path.lexists(f'/tmp/aimo2-s-{tag}') and not os.path.lexists(f'/dev/shm/aimo2-s-{tag}')
    assert _call(s, 'print(open("mine").read())').stdout == 'k\n'
    _clean_after(iso, s)


def test_forged_done_line(ex):
    "Code that forges the end of its call only cuts its own output short; the parent is not blocked and limits hold."
    s = ex.session()
    r = _call(s, 'import os\nprint("a", flush=True)\nos.write(3, b"D 0\\n")\nimport time\ntime.sleep(0.5)\nprint("b")\nwhile True: pass', timeout=3)
    assert r.status in ('ok', 'error', 'timeout'), r
    for _ in range(3):   # the calls after it may run the rest of the forged one: each ends within its limit, then the session is back
        t = time.monotonic()
        r = _call(s, 'print(6 * 7)', timeout=1)
        assert time.monotonic() - t < 1 + 1.0, r
        if r.ok and r.stdout == '42\n': break
    assert r.ok and r.stdout == '42\n', r
    _clean_after(ex, s)


def test_forged_status_lines(ex):
    "As for one-shot runs: lines the code writes on the status pipe neither pass a failed call nor lose its output."
    with ex.session() as s:
        r = _call(s, 'print("partial")\n' + ts._status_writes(b'W 0\nE None\n') + 'raise SystemExit(5)')
        assert not r.ok and r.returncode == 5 and r.stdout == 'partial\n', r
        r = _call(s, 'print("kept")\n' + ts._status_writes('W \u00b2\nW 99999999999999999999999\nE \udcff\n'.encode('utf-8', 'surrogateescape')))
        assert r.ok and r.stdout == 'kept\n' and r.restarted, r


# One session against another ------------------------------------------------------------------------------------------
def test_sessions_have_distinct_uids(iso):
    a, b = iso.session(), iso.session()
    ua, ub = _call(a, 'import os\nprint(os.getuid())').stdout, _call(b, 'import os\nprint(os.getuid())').stdout
    assert ua != ub and int(ua) != 0 and int(ub) != 0
    _clean_after(iso, a, b)


def test_session_cannot_reach_another(iso):
    "A session cannot read or change another's files, signal its process, or see its globals."
    victim, attacker = iso.session(), iso.session()
    r = _call(victim, 'import os\nsecret = 41\nopen("ans.txt", "w").write("2")\nprint(os.getcwd()[::-1])')
    assert r.ok, r
    vdir = r.stdout.strip()[::-1]
    attack = DISARM + textwrap.dedent(f'''
        import glob, os, signal
        hits = []
        for d in [{vdir!r}] + glob.glob("/tmp/aimo2-runs-*/*"):
            for f in ("ans.txt", "colorsys.py"):
                try: open(os.path.join(d, f), "w").write("666"); hits.append("w " + d)
                except OSError: pass
            try: hits.append("r " + open(os.path.join(d, "ans.txt")).read())
            except OSError: pass
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != os.getpid():
                try: os.kill(int(p), signal.SIGKILL)
                except OSError: pass
                try: hits.append("m " + str(open(f"/proc/{{p}}/mem", "rb").read(1)))
                except OSError: pass
        print(hits)''')
    r = _call(attacker, attack)
    assert r.ok and r.stdout == '[]\n', r
    r = _call(victim, 'import colorsys\nsecret += 1\nprint(secret, open("ans.txt").read(), colorsys.ONE_THIRD)')
    assert (r.stdout, r.restarted) == ('42 2 0.3333333333333333\n', False), r
    _clean_after(iso, victim, attacker)


def test_process_limit_is_per_session(iso):
    hog, victim = iso.session(), iso.session()
    f = hog.submit(DISARM + te.ATTACKS['fork bomb'], timeout=3)
    time.sleep(1.0)
    r = _call(victim, 'import subprocess\nprint(subprocess.run(["true"]).returncode)')
    assert r.ok and r.stdout == '0\n', r
    assert not f.result().ok
    _clean_after(iso, hog, victim)


# The hostile-code suite, against sessions --------------------------------------------------------------------------------
def _attack(ex: Executor, name: str, victims: dict, listener) -> None:
    s = ex.session()
    assert _call(s, 'x = 1').ok
    code = te.ATTACKS[name].format(port=listener.getsockname()[1], test_pid=os.getpid(), **victims)
    t = time.monotonic()
    r = s.submit(code).result()
    elapsed = time.monotonic() - t
    assert not r.ok and r.status in ('error', 'timeout') and r.error, (name, r)
    assert elapsed < te.TIMEOUT + 1.0, (name, elapsed, r)
    assert len(r.stdout.encode()) <= CFG['output_bytes'] and len(r.stderr.encode()) <= CFG['output_bytes']
    assert r.isolation == ex.isolation
    if 'flood' in name and name != 'disk flood': assert r.truncated and r.timed_out
    r2 = _call(s, 'print(6 * 7)')
    assert r2.ok and r2.stdout == '42\n', r2
    if name in ('infinite loop', 'fork bomb', 'memory bomb', 'segfault', 'sys.exit(3)', 'ignore SIGTERM'): assert r2.restarted, (name, r2)
    _clean_after(ex, s)
    te._still_works(ex)


@pytest.mark.parametrize('name', list(te.ATTACKS))
def test_attack(auto, name, victims, listener):
    _attack(auto, name, victims, listener)


@pytest.mark.parametrize('name', ['fork bomb', 'subprocess bomb', 'overwrite outside', 'delete outside', 'kill parent',
                                  'kill test process', 'network'])
def test_attack_uid_level(name, victims, listener):
    if not te.ROOT: pytest.skip('the uid level needs root')
    with Executor(ExecConfig(**CFG, isolation='uid')) as e: _attack(e, name, victims, listener)


@pytest.mark.parametrize('name', ['network', 'create in /tmp', 'kill test process', 'infinite loop'])
def test_attack_guard_level(name, victims, listener):
    with Executor(ExecConfig(**CFG, isolation='guard')) as e: _attack(e, name, victims, listener)


@pytest.mark.parametrize('name', list(ts.NET))
def test_network_is_denied(ex, name, listeners):
    with ex.session() as s: assert not _call(s, DISARM + ts.NET[name].format(**listeners)).ok


listeners = ts.listeners  # a fixture of test_sandbox


def test_environment_is_clean(ex):
    os.environ[ts.SECRET] = 'k3y'
    try:
        with Executor(ExecConfig(**CFG, isolation=ex.isolation if ex.isolation != 'namespace' else 'auto')) as e, e.session() as s:
            r = _call(s, 'import os\nprint(sorted(os.environ))\ntry: print(open("/proc/self/environ", "rb").read().count(%r))\n'
                         'except OSError: print(0)' % ts.SECRET.encode())
    finally: os.environ.pop(ts.SECRET, None)
    assert r.ok and ts.SECRET not in r.stdout.splitlines()[0] and r.stdout.splitlines()[1] == '0', r


# Issue 12: an executor left unclosed leaves no runs folder --------------------------------------------------------------------
def test_unclosed_executor_leaves_no_runs_folder(tmp_path):
    script = textwrap.dedent(f'''
        from aimo2_nb.config import ExecConfig
        from aimo2_nb.executor import Executor
        ex = Executor(ExecConfig(**{CFG!r}))
        s = ex.session()
        assert s.submit('x = 1').result().ok
        ex.prewarm_sessions(1, wait=True)
        print(ex.capabilities['runs_dir'], flush=True)
        ''')   # exits without closing the executor or the session
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, 'PYTHONPATH': te.REPO + os.pathsep + os.environ.get('PYTHONPATH', '')})
    assert out.returncode == 0, out.stderr
    runs_dir = out.stdout.split()[-1]
    assert 'aimo2-runs-' in runs_dir
    end = time.monotonic() + 10
    while os.path.lexists(runs_dir) and time.monotonic() < end: time.sleep(0.05)
    assert not os.path.lexists(runs_dir), os.listdir(runs_dir)

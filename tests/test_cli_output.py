"""What `aimo2 solve` prints while samples stream: a live status line on a terminal, plain event lines when piped.

The real `aimo2 solve` runs in a subprocess on the model-free scripted engine (a config file names it), once with
stderr on a pseudo-terminal and once on a pipe."""
from __future__ import annotations
import os, pty, select, subprocess, sys, time
from pathlib import Path
import pytest
import yaml

from aimo2_nb.config import profile, to_dict

ROOT = Path(__file__).resolve().parents[1]
RUN = "import sys; from aimo2_nb.cli import main; sys.exit(main(sys.argv[1:]))"  # `aimo2`, from this checkout


@pytest.fixture
def slow_scripted(tmp_path) -> Path:
    "A cpu-profile config whose 2 samples stream for about 3 seconds on the scripted engine, then box 391."
    d = to_dict(profile('cpu', samples=2))
    d['engine'] = {'kind': 'scripted', 'answer': 391, 'delay_s': 0.2, 'tok_s': 12.0}
    p = tmp_path / 'run.yaml'; p.write_text(yaml.safe_dump(d))
    return p


def solve(cfg: Path, cwd: Path, tty: bool) -> tuple[int, str, str]:
    "Run `aimo2 solve` with stderr on a pseudo-terminal (tty) or a pipe; (rc, stdout, stderr)."
    argv = [sys.executable, '-c', RUN, 'solve', 'What is 17*23?', '--config', str(cfg)]
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    if not tty:
        p = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
        return p.returncode, p.stdout, p.stderr
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    err, t0 = b'', time.monotonic()
    while time.monotonic() - t0 < 120:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try: chunk = os.read(master, 4096)
            except OSError: break  # the child closed the terminal
            if not chunk: break
            err += chunk
        elif p.poll() is not None: break
    out = p.stdout.read().decode(); p.wait(timeout=30); os.close(master)
    return p.returncode, out, err.decode(errors='replace')


def test_terminal_shows_samples_running_and_tokens(slow_scripted, tmp_path):
    rc, out, err = solve(slow_scripted, tmp_path, tty=True)
    assert rc == 0, err[-2000:]
    assert 'q1: answer 391' in out
    assert 'samples running,' in err and 'tokens so far' in err  # the live line while the samples stream
    assert '\r' in err


def test_pipe_gets_plain_lines_only(slow_scripted, tmp_path):
    rc, out, err = solve(slow_scripted, tmp_path, tty=False)
    assert rc == 0, err[-2000:]
    assert 'q1: answer 391' in out and 'answer 391 (at' in err  # the event lines still come
    assert 'tokens so far' not in err and '\r' not in err and '\x1b[' not in err  # no status line, no terminal codes
    assert 'section "Glossary"' in out  # the output says where its words are defined

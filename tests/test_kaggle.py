"""The built submission notebook, end to end: run with execnb in a fresh Python against the stand-in gateway
(tests/stubs/kaggle_evaluation), on the 10 reference problems, with the scripted engine; fault cases must still give
10 valid rows in time. Also: the build is byte-for-byte reproducible, in sync with the committed submission/, and
driven by the competition.
"""
from __future__ import annotations
import json, os, subprocess, sys, time
from pathlib import Path

import polars as pl
import pytest
import yaml

from aimo2_nb.kaggle import COMPETITIONS
from aimo2_nb.kaggle_build import NOTEBOOK_FILE, build_files, generated_files, submission_for
from aimo2_nb.cli_kaggle import cli_build

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / 'tests' / 'stubs'
REFERENCE = ROOT / 'aimo2_nb' / 'problems' / 'aimo2_reference.csv'  # shipped with the project: never skipped


def test_reference_problems_are_shipped():
    assert REFERENCE.is_file(), f'{REFERENCE} is missing: the project ships the reference problems'

RUNNER = r'''
import sys, time
from execnb.nbio import read_nb
from execnb.shell import CaptureShell
nb = read_nb(sys.argv[1])
t0 = time.monotonic()
CaptureShell().run_all(nb, exc_stop=True)
for c in nb.cells:
    for o in c.get('outputs', []):
        if o.get('output_type') == 'stream': print(''.join(o['text']), end='')
print(f"notebook ran in {time.monotonic() - t0:.1f}s")
'''


# ---------------------------------------------------------------- build
def test_build_twice_is_byte_identical(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert cli_build(['--root', str(ROOT), '--out', str(a)]) == 0
    assert cli_build(['--root', str(ROOT), '--out', str(b)]) == 0
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted([NOTEBOOK_FILE, 'kernel-metadata.json', 'config.yaml', 'local.yaml'])
    for n in names: assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert generated_files(ROOT) == generated_files(ROOT)


def test_committed_submission_is_in_sync():
    stale = [p for p, t in generated_files(ROOT).items() if not p.is_file() or p.read_text(encoding='utf-8') != t]
    assert not stale, f"submission/ is out of date: run `aimo2 build` ({stale})"


def test_competition_drives_the_outputs(tmp_path):
    f2 = build_files(ROOT, submission_for('aimo2'), tmp_path)
    f3 = build_files(ROOT, submission_for('aimo3'), tmp_path)
    m2, m3 = (json.loads(f[tmp_path / 'kernel-metadata.json']) for f in (f2, f3))
    assert (m2['machine_shape'], m3['machine_shape']) == ('NvidiaL4', 'NvidiaH100')
    assert m3['competition_sources'] == ['ai-mathematical-olympiad-progress-prize-3']
    c2, c3 = (yaml.safe_load(f[tmp_path / 'config.yaml']) for f in (f2, f3))
    assert (c2['run']['answers']['modulus'], c3['run']['answers']['modulus']) == (1000, 100000)
    assert (c2['run']['engine']['tp'], c3['run']['engine']['tp']) == (4, 1)
    assert 'modulo of 100000' in c3['run']['prompts']['list'][0]['user_suffix']
    nb3 = f3[tmp_path / NOTEBOOK_FILE]
    assert 'aimo_3_inference_server.AIMO3InferenceServer' in nb3 and 'modulus: 100000' in nb3


def test_metadata_fields():
    m = json.loads((ROOT / 'submission' / 'kernel-metadata.json').read_text())
    assert m['kernel_type'] == 'notebook' and m['language'] == 'python' and m['code_file'] == NOTEBOOK_FILE
    assert m['enable_gpu'] is True and m['enable_internet'] is False and m['machine_shape'] == 'NvidiaL4'
    assert m['competition_sources'] == ['ai-mathematical-olympiad-progress-prize-2']
    assert m['dataset_sources'] and m['model_sources'] and m['docker_image'] and m['docker_image_pinning_type'] == 'original'


def test_notebook_is_self_contained():
    nb = json.loads((ROOT / 'submission' / NOTEBOOK_FILE).read_text())
    code = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    own = [c for c in code if not c.startswith('AIMO2_SOURCES[')]
    assert not any('pip' in c for c in own), 'the serving cells install nothing'
    first_import = next(i for i, c in enumerate(own) if 'import aimo2_nb' in c)
    assert any('EmbeddedModules' in c for c in own[:first_import]), 'the import hook comes before any aimo2_nb import'
    assert 'def predict(id_, problem, *rest)' in '\n'.join(own)
    kaggle_src = next(c for c in code if c.startswith("AIMO2_SOURCES['aimo2_nb.kaggle']"))
    assert "'--no-index', '--no-deps'" in kaggle_src


def test_hook_refuses_the_installed_package(tmp_path):
    "Even with aimo2_nb installed, the notebook's modules are the embedded ones; a module not embedded fails."
    nb = json.loads((ROOT / 'submission' / NOTEBOOK_FILE).read_text())
    cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    upto = next(i for i, c in enumerate(cells) if c.startswith('import aimo2_nb'))
    script = 'import aimo2_nb.config\n' + '\n'.join(cells[:upto]) + '''
import aimo2_nb, aimo2_nb.solver
assert aimo2_nb.__file__ == '<embedded aimo2_nb>' and aimo2_nb.solver.__file__ == '<embedded aimo2_nb.solver>'
try: import aimo2_nb.devtools
except ImportError as e: print('refused:', e)
else: raise SystemExit('an installed module was picked up')
import aimo2_nb.engines.llamacpp as L
assert 'aimo2_nb.engines.llamacpp' not in AIMO2_SOURCES and L.__file__.endswith('llamacpp.py'), L.__file__
assert L.__spec__.loader.get_source(L.__name__) == open(L.__file__).read()
'''
    (tmp_path / 'hook.py').write_text(script)
    p = subprocess.run([sys.executable, 'hook.py'], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    assert 'refused: aimo2_nb.devtools is not embedded' in p.stdout
    assert 'aimo2_nb.engines.llamacpp is not embedded: using the installed' in p.stdout  # a local run's other engine


def test_embedded_executor_launches_its_zygote_from_the_embedded_source(tmp_path):
    "The sandbox starts from the source the import hook serves (aimo2_nb.zygote is embedded, not installed)."
    nb = json.loads((ROOT / 'submission' / NOTEBOOK_FILE).read_text())
    cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    upto = next(i for i, c in enumerate(cells) if c.startswith('import aimo2_nb'))
    script = '\n'.join(cells[:upto]) + """
from aimo2_nb import zygote
from aimo2_nb.executor import Executor, zygote_source
assert zygote.__file__ == '<embedded aimo2_nb.zygote>' and zygote_source() == AIMO2_SOURCES['aimo2_nb.zygote']
with Executor() as ex: r = ex.submit('print(6 * 7)').result()
assert r.ok and r.stdout == '42\\n', r
print('ran in the sandbox:', r.isolation)
"""
    (tmp_path / 'sandbox.py').write_text(script)
    p = subprocess.run([sys.executable, 'sandbox.py'], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert 'ran in the sandbox:' in p.stdout


def test_only_the_served_engines_are_embedded():
    "The GPU submission embeds its engine (lmdeploy) and the dry-run engine (scripted, in engines.replay), nothing else."
    nb = json.loads((ROOT / 'submission' / NOTEBOOK_FILE).read_text())
    names = {''.join(c['source']).split("'")[1] for c in nb['cells'] if ''.join(c['source']).startswith('AIMO2_SOURCES[')}
    assert {n for n in names if n.startswith('aimo2_nb.engines.')} == {'aimo2_nb.engines.base', 'aimo2_nb.engines.lmdeploy',
                                                                     'aimo2_nb.engines.replay'}
    assert 'aimo2_nb.executor' in names and not any('Fake' in ''.join(c['source']) for c in nb['cells'])


# ---------------------------------------------------------------- end to end
def scripted_config(tmp_path: Path, engine: dict, timeout_s: float = 3.0, competition: dict | None = None, **serve) -> Path:
    "An AIMO2_CONFIG file: the scripted engine, a tiny budget for 10 questions."
    cfg = {'serve': {'wheels_dataset': '', 'model': '', 'grace_s': 0.5, 'prewarm_executor': False,
                     'trace_path': 'trace.jsonl', 'load_timeout_s': 5.0, **serve},
           'run': {'engine': engine,
                   'budget': {'total_s': 200.0, 'n_questions': 10, 'reserve_s': 5.0, 'min_question_s': 1.0, 'drain_s': 0.2,
                              'time_rule': 'tiers'},  # the tier's own short limit (the default profile's fair share is minutes)
                   'speed': {'adaptive': False, 'default_speed': 3,
                             'tiers': [{'speed': 3, 'samples': 4, 'timeout_s': timeout_s, 'min_answers': 3}]}}}
    if competition: cfg['competition'] = competition
    p = tmp_path / 'aimo2_config.yaml'
    p.write_text(yaml.safe_dump(cfg))
    return p


def run_notebook(nb: Path, cwd: Path, config: Path, csv: Path, timeout: float = 300, **env) -> tuple[subprocess.CompletedProcess, float]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(('AIMO2_', 'KAGGLE_'))}
    e.update(AIMO2_CONFIG=str(config), AIMO2_KAGGLE_EVALUATION=str(STUBS), AIMO2_LOCAL_CSV=str(csv),
             AIMO2_INPUT_ROOT=str(cwd / 'input'), KAGGLE_EVALUATION_STUB_LOG=str(cwd / 'stub_log.json'), **env)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, '-c', RUNNER, str(nb)], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)
    return p, time.monotonic() - t0


def check_submission(cwd: Path, csv: Path, modulus: int = 1000) -> pl.DataFrame:
    served = pl.read_csv(csv)
    sub = pl.read_parquet(cwd / 'submission.parquet')
    assert sub.height == served.height
    assert sub['id'].to_list() == served['id'].to_list() and sub['id'].dtype == served['id'].dtype
    assert sub['answer'].dtype == pl.Int64 and all(0 <= a < modulus for a in sub['answer'].to_list())
    log = json.loads((cwd / 'stub_log.json').read_text())
    assert {r['thread'] for r in log} == {'grpc-worker_0'} and not any(r['main_thread'] for r in log)
    return sub


def test_reference_run_scripted(tmp_path):
    cfg = scripted_config(tmp_path, {'kind': 'scripted'})
    p, secs = run_notebook(ROOT / 'submission' / NOTEBOOK_FILE, tmp_path, cfg, REFERENCE)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    sub = check_submission(tmp_path, REFERENCE)
    assert 'competition aimo2, engine scripted' in p.stdout and '[10/10]' in p.stdout
    ends = [json.loads(l) for l in (tmp_path / 'trace.jsonl').read_text().splitlines() if '"question_end"' in l]
    assert [e['qid'] for e in ends] == sub['id'].to_list()
    assert sub['answer'].to_list() == [e['answer'] for e in ends]
    assert secs < 120


def test_scoring_rerun_serves(tmp_path):
    cfg = scripted_config(tmp_path, {'kind': 'scripted', 'answer': 391})
    p, _ = run_notebook(ROOT / 'submission' / NOTEBOOK_FILE, tmp_path, cfg, tmp_path / 'unused.csv',
                        KAGGLE_IS_COMPETITION_RERUN='1', KAGGLE_EVALUATION_STUB_CSV=str(REFERENCE))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert check_submission(tmp_path, REFERENCE)['answer'].to_list() == [391] * 10


FAULTS = {  # fault -> longest acceptable run (s): startup + 10 questions
    'start': 60, 'poll': 60, 'empty': 60, 'load': 60,
    'load_hang': 60,  # the first call waits load_timeout_s (2 s), then every answer is the fallback
    'stall': 90,  # every question runs to its limit (1.2 s) and answers the fallback
    'block': 60,  # poll never returns: two watchdog overruns (1.7 s each), then the engine is given up
}


@pytest.mark.parametrize('fault', sorted(FAULTS))
def test_faults_still_answer_every_row_in_time(tmp_path, fault):
    cfg = scripted_config(tmp_path, {'kind': 'scripted', 'fault': fault}, timeout_s=1.2, load_timeout_s=2.0)
    p, secs = run_notebook(ROOT / 'submission' / NOTEBOOK_FILE, tmp_path, cfg, REFERENCE, timeout=FAULTS[fault] + 60,
                           KAGGLE_EVALUATION_STUB_DEADLINE_S='10')
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    sub = check_submission(tmp_path, REFERENCE)
    assert sub['answer'].to_list() == [0] * 10  # the configured fallback
    assert secs < FAULTS[fault], f"{fault}: {secs:.1f}s"
    log = json.loads((tmp_path / 'stub_log.json').read_text())
    assert max(r['seconds'] for r in log[1:]) < 10


def test_per_call_deadline_with_a_hung_engine(tmp_path):
    "A later call returns before the per-call deadline even when the question's own limit is longer."
    csv = tmp_path / 'q.csv'
    pl.DataFrame({'id': [11, 12, 13, 14], 'problem': ['a', 'b', 'c', 'd']}).write_csv(csv)
    prof = {**{k: v for k, v in vars(COMPETITIONS['aimo2']).items()}, 'call_deadline_s': 3.0}
    cfg = scripted_config(tmp_path, {'kind': 'scripted', 'fault': 'block'}, timeout_s=6.0, competition=prof, call_margin_s=1.0)
    p, _ = run_notebook(ROOT / 'submission' / NOTEBOOK_FILE, tmp_path, cfg, csv, KAGGLE_EVALUATION_STUB_DEADLINE_S='3')
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    sub = check_submission(tmp_path, csv)
    assert sub['id'].dtype == pl.Int64
    log = json.loads((tmp_path / 'stub_log.json').read_text())
    assert 6 < log[0]['seconds'] < 9  # the first call has no deadline: the question's limit + grace
    assert 1.5 < log[1]['seconds'] < 2.5  # deadline 3 s - margin 1 s
    assert log[2]['seconds'] < 0.5 and log[3]['seconds'] < 0.5  # given up after two overruns


def test_aimo3_build_int_ids_and_wide_answers(tmp_path):
    out = tmp_path / 'sub3'
    assert cli_build(['--root', str(ROOT), '--out', str(out), '--competition', 'aimo3']) == 0
    csv = tmp_path / 'test.csv'
    qs = [f'problem {i}' for i in range(5)]
    pl.DataFrame({'id': [101, 102, 103, 104, 105], 'problem': qs}).write_csv(csv)
    cfg = scripted_config(tmp_path, {'kind': 'scripted', 'modulus': 100000})
    p, _ = run_notebook(out / NOTEBOOK_FILE, tmp_path, cfg, csv)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert 'competition aimo3' in p.stdout and 'answers mod 100000' in p.stdout
    sub = check_submission(tmp_path, csv, modulus=100000)
    assert max(sub['answer'].to_list()) >= 1000


def test_competition_layout_found_by_glob(tmp_path):
    "kaggle_evaluation and test.csv found under /kaggle/input/competitions/<slug>/ (here: AIMO2_INPUT_ROOT)."
    comp = tmp_path / 'input' / 'competitions' / 'ai-mathematical-olympiad-progress-prize-2'
    comp.mkdir(parents=True)
    import shutil
    shutil.copytree(STUBS / 'kaggle_evaluation', comp / 'kaggle_evaluation')
    pl.DataFrame({'id': ['x1', 'x2'], 'problem': ['p', 'q']}).write_csv(comp / 'test.csv')
    cfg = scripted_config(tmp_path, {'kind': 'scripted'})
    e = {k: v for k, v in os.environ.items() if not k.startswith(('AIMO2_', 'KAGGLE_'))}
    e.update(AIMO2_CONFIG=str(cfg), AIMO2_INPUT_ROOT=str(tmp_path / 'input'), KAGGLE_EVALUATION_STUB_LOG=str(tmp_path / 'stub_log.json'))
    p = subprocess.run([sys.executable, '-c', RUNNER, str(ROOT / 'submission' / NOTEBOOK_FILE)], capture_output=True,
                       text=True, cwd=tmp_path, env=e, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    check_submission(tmp_path, comp / 'test.csv')


def _cpu_model_ready() -> bool:
    import importlib.util
    if importlib.util.find_spec('llama_cpp') is None: return False
    try:
        from aimo2_nb.engines.llamacpp import model_parts
        model_parts('qwen2.5-coder-0.5b'); return True
    except Exception: return False


@pytest.mark.slow
@pytest.mark.skipif(not _cpu_model_ready(), reason='llama-cpp-python or the qwen2.5-coder-0.5b part packages are not installed')
def test_local_yaml_runs_the_cpu_model(tmp_path):
    "submission/local.yaml drives the embedded CPU model; cut to one sample of 48 tokens to stay quick on 2 cores."
    csv = tmp_path / 'one.csv'
    pl.DataFrame({'id': ['t1'], 'question': ['What is 2+3? Put the answer in \\boxed{}.']}).write_csv(csv)
    local = yaml.safe_load((ROOT / 'submission' / 'local.yaml').read_text())
    assert local['run']['engine'] == {'kind': 'llamacpp', 'model': 'qwen2.5-coder-0.5b', 'n_ctx': 2048}
    assert local['run']['speed']['tiers'][0]['samples'] == 2 and local['run']['sampling']['max_new_tokens'] <= 512
    local['run']['sampling']['max_new_tokens'] = 48
    local['run']['speed']['tiers'][0].update(samples=1, min_answers=1)
    cfg = tmp_path / 'local.yaml'
    cfg.write_text(yaml.safe_dump(local))
    p, _ = run_notebook(ROOT / 'submission' / NOTEBOOK_FILE, tmp_path, cfg, csv, timeout=400)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert 'engine llamacpp' in p.stdout and 'LlamaCppEngine ready' in p.stdout
    check_submission(tmp_path, csv)
    ends = [json.loads(l) for l in (tmp_path / 'trace.jsonl').read_text().splitlines() if '"sample_end"' in l]
    assert ends and ends[0]['tokens'] > 0


def test_project_build_config_is_used(tmp_path):
    "A submission.yaml at the project root drives `aimo2 build` and the CI sync check (generated_files)."
    (tmp_path / 'aimo2_nb').symlink_to(ROOT / 'aimo2_nb')
    (tmp_path / 'settings.ini').write_text((ROOT / 'settings.ini').read_text())
    (tmp_path / 'submission.yaml').write_text("kernel: {id: me/aimo2-submission}\nserve: {wheels_dataset: me/aimo2-wheels, model: me/m/Transformers/awq/2}\n")
    files = generated_files(tmp_path)
    meta = json.loads(files[tmp_path / 'submission' / 'kernel-metadata.json'])
    assert (meta['id'], meta['dataset_sources'], meta['model_sources']) == ('me/aimo2-submission', ['me/aimo2-wheels'], ['me/m/Transformers/awq/2'])
    assert cli_build(['--root', str(tmp_path)]) == 0 and cli_build(['--root', str(tmp_path), '--check']) == 0
    assert (tmp_path / 'submission' / 'kernel-metadata.json').read_text() == files[tmp_path / 'submission' / 'kernel-metadata.json']


# ---------------------------------------------------------------- the engine built in the main thread (issue 18)
def test_engine_that_needs_the_main_thread_serves(tmp_path):
    "lmdeploy's mp executor installs signal handlers while it is built: only the main thread may do that."
    cfg = scripted_config(tmp_path, {'kind': 'scripted', 'answer': 391, 'main_thread': True})
    p, _ = run_notebook(ROOT / 'submission' / NOTEBOOK_FILE, tmp_path, cfg, REFERENCE)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert check_submission(tmp_path, REFERENCE)['answer'].to_list() == [391] * 10  # every row from the engine
    loads = [json.loads(l) for l in (tmp_path / 'trace.jsonl').read_text().splitlines() if '"engine_load"' in l]
    assert [(e['attempt'], e['ok']) for e in loads] == [(1, True)]


def test_failed_loads_are_retried_and_recorded(tmp_path):
    "Every attempt fails: each one is in the trace with its reason, and every row still gets the fallback in time."
    cfg = scripted_config(tmp_path, {'kind': 'scripted', 'fault': 'load'}, load_attempts=3)
    p, _ = run_notebook(ROOT / 'submission' / NOTEBOOK_FILE, tmp_path, cfg, REFERENCE)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert check_submission(tmp_path, REFERENCE)['answer'].to_list() == [0] * 10
    loads = [json.loads(l) for l in (tmp_path / 'trace.jsonl').read_text().splitlines() if '"engine_load"' in l]
    assert [(e['attempt'], e['ok'], e['why']) for e in loads] == [(1, False, 'as configured'), (2, False, 'retry'), (3, False, 'retry')]
    assert all('scripted engine: load failure' in e['error'] for e in loads)
    assert 'engine load 3 (retry): failed' in p.stdout


def test_a_lost_engine_is_rebuilt(tmp_path):
    "A worker's SIGUSR1 (lmdeploy's mp executor would end the process with os._exit(1)) loses the engine, not the run."
    cfg = scripted_config(tmp_path, {'kind': 'scripted', 'answer': 391, 'fault': 'die'})
    p, _ = run_notebook(ROOT / 'submission' / NOTEBOOK_FILE, tmp_path, cfg, REFERENCE)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    answers = check_submission(tmp_path, REFERENCE)['answer'].to_list()
    assert answers[0] == 391 and answers.count(391) >= 3, answers  # the first engine, then rebuilt ones
    assert 'engine lost' in p.stdout and 'rebuilding the engine' in p.stdout
    loads = [json.loads(l) for l in (tmp_path / 'trace.jsonl').read_text().splitlines() if '"engine_load"' in l]
    assert len(loads) >= 2 and all(e['ok'] for e in loads)


def _fake_pipeline_cls():
    "The CPU stand-in for lmdeploy's pipeline (a test double, tests/doubles/)."
    from doubles.fake_lmdeploy import FakePipeline
    return FakePipeline


@pytest.mark.parametrize('turbomind, first_ok', [('present', True), ('absent', True), ('failing', False)])
def test_lmdeploy_load_ladder(tmp_path, monkeypatch, turbomind, first_ok):
    "Backend decided by us: TurboMind present (built), absent (the PyTorch engine, mp at tp=2), failing (retried safer)."
    import aimo2_nb.engines.lmdeploy as L
    from aimo2_nb.kaggle import Server, SubmissionConfig, ServeConfig
    from aimo2_nb.config import RunConfig
    Fake, built = _fake_pipeline_cls(), []
    def factory(cfg):
        built.append(cfg)
        if turbomind == 'failing' and cfg.backend == 'turbomind': raise RuntimeError('TurboMind crashed while loading')
        return Fake(backend=cfg.backend)
    monkeypatch.setattr(L, 'open_pipeline', factory)
    monkeypatch.setattr(L, 'probe_turbomind', lambda m: L.TurbomindProbe(turbomind != 'absent', 'not built'))
    model = tmp_path / 'model'; model.mkdir()
    sub = SubmissionConfig(serve=ServeConfig(trace_path=str(tmp_path / 't.jsonl'), prewarm_executor=False, wheels_dataset='', model=''),
                           run=RunConfig(engine={'kind': 'lmdeploy', 'model': str(model), 'tp': 2}))
    srv = Server(sub)
    srv.build_engine()
    try:
        assert [e.ok for e in srv.loads] == ([True] if first_ok else [False, True])
        eng = srv.engine
        want = 'turbomind' if turbomind == 'present' else 'pytorch'
        assert (eng.cfg.backend, eng.backend) == (want, want)
        kw = L.backend_kwargs(eng.cfg)
        if want == 'pytorch': assert kw['distributed_executor_backend'] == 'mp'
        if turbomind == 'failing':
            assert 'TurboMind crashed' in srv.loads[0].error and srv.loads[1].why.startswith('safer settings')
            assert (eng.cfg.eager_mode, eng.cfg.cache_max_entry_count) == (True, 0.675)
        assert [b.backend for b in built] == (['turbomind'] if turbomind == 'present' else ['pytorch'] if turbomind == 'absent' else ['turbomind', 'pytorch'])
        ev = [json.loads(l) for l in (tmp_path / 't.jsonl').read_text().splitlines()]
        assert [e['kind'] for e in ev] == ['engine_load'] * len(srv.loads)
    finally:
        srv.shutdown()


def test_resolved_config_is_built_with_the_matching_class():
    "With lmdeploy's real classes: TurboMind absent at tp=4 -> a PytorchEngineConfig with the mp executor (never ray)."
    msgs = pytest.importorskip('lmdeploy.messages', reason='lmdeploy not installed (CI installs it: .ci/extra-install)')
    from aimo2_nb.engines.lmdeploy import LmdeployConfig, TurbomindProbe, backend_config, resolve_backend
    cfg, _ = resolve_backend(LmdeployConfig(model='/m', tp=4), TurbomindProbe(False, 'not built'))
    bc = backend_config(cfg, n_gpus=4)
    assert isinstance(bc, msgs.PytorchEngineConfig) and (bc.tp, bc.distributed_executor_backend) == (4, 'mp')

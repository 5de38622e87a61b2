"""`aimo2 push` and `aimo2 wheels --push` through the REAL kaggle CLI (2.2.5) against a loopback stub of Kaggle's API
(tests/stubs/kaggle_api_stub.py): fake credentials, a throwaway HOME, KAGGLE_API_ENVIRONMENT=LOCALHOST and
HTTP_PROXY pointing at the stub. Nothing leaves the machine.
"""
from __future__ import annotations
import json, os, sys
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / 'stubs'))
from kaggle_api_stub import KaggleStub  # noqa: E402

from aimo2_nb.kaggle_build import NOTEBOOK_FILE  # noqa: E402
from aimo2_nb.cli_kaggle import cli_build, cli_push, cli_wheels  # noqa: E402
from aimo2_nb.kaggle_push import kaggle_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

try: KAGGLE = kaggle_cli()
except FileNotFoundError: KAGGLE = None
pytestmark = pytest.mark.skipif(KAGGLE is None, reason='the kaggle CLI is not installed (pip install kaggle==2.2.5 six)')


@contextmanager
def environ(env: dict):
    "Run with exactly `env` as the process environment (the CLI subprocess inherits it)."
    old = dict(os.environ)
    os.environ.clear(); os.environ.update(env)
    try: yield
    finally: os.environ.clear(); os.environ.update(old)


@pytest.fixture
def built(tmp_path):
    out = tmp_path / 'submission'
    assert cli_build(['--root', str(ROOT), '--out', str(out)]) == 0
    return out


def test_push_sends_the_built_notebook(built, tmp_path, capsys):
    with KaggleStub() as stub, environ(stub.env(str(tmp_path / 'home'))):
        rc = cli_push(['-p', str(built)])
    out = capsys.readouterr().out
    assert rc == 0 and 'Kernel version 3 successfully pushed' in out
    assert stub.names() == ['SaveKernel']
    body = stub.body('SaveKernel')
    assert body['slug'] == 'aimo2-nb/aimo2-submission' and body['newTitle'] == 'aimo2-submission'
    assert body['enableInternet'] is False and body['enableGpu'] is True and body['machineShape'] == 'NvidiaL4'
    assert body['competitionDataSources'] == ['ai-mathematical-olympiad-progress-prize-2']
    assert body['datasetDataSources'] == ['aimo2-nb/aimo2-wheels']
    assert body['modelDataSources'] == ['youyc22/dpsk-14b-sft-dpo-3-16-awq-tb/Keras/default/1']
    assert body['language'] == 'python' and body['kernelType'] == 'notebook'
    assert body['dockerImage'] and body['dockerImagePinningType'] == 'original'
    # the text is the built notebook (the CLI joins each cell's source lines and clears outputs)
    nb = json.loads((built / NOTEBOOK_FILE).read_text())
    for c in nb['cells']: c['source'] = ''.join(c['source'])
    assert json.loads(body['text']) == nb


def test_push_aimo3_profile(tmp_path, capsys):
    out = tmp_path / 'sub3'
    assert cli_build(['--root', str(ROOT), '--out', str(out), '--competition', 'aimo3']) == 0
    with KaggleStub() as stub, environ(stub.env(str(tmp_path / 'home'))):
        assert cli_push(['-p', str(out)]) == 0
    body = stub.body('SaveKernel')
    assert body['machineShape'] == 'NvidiaH100' and body['competitionDataSources'] == ['ai-mathematical-olympiad-progress-prize-3']
    assert 'modulus: 100000' in body['text']


def test_push_error_is_a_failure(built, tmp_path, capsys):
    "The CLI prints 'Kernel push error' and exits 0; aimo2 push must fail with the message."
    err = {'SaveKernel': (200, {'error': 'Notebook not found: competition rules not accepted'})}
    with KaggleStub(err) as stub, environ(stub.env(str(tmp_path / 'home'))):
        rc = cli_push(['-p', str(built)])
    cap = capsys.readouterr()
    assert rc == 1
    assert 'Kernel push error: Notebook not found: competition rules not accepted' in cap.out
    assert 'aimo2 push: failed: Kernel push error: Notebook not found' in cap.err


def test_push_http_error_is_a_failure(built, tmp_path, capsys):
    with KaggleStub({'SaveKernel': (403, {'error': 'forbidden'})}) as stub, environ(stub.env(str(tmp_path / 'home'))):
        rc = cli_push(['-p', str(built)])
    assert rc == 1 and 'aimo2 push: failed' in capsys.readouterr().err


def test_push_refuses_a_missing_build(tmp_path, capsys):
    assert cli_push(['-p', str(tmp_path / 'nothing')]) == 2
    assert 'run `aimo2 build` first' in capsys.readouterr().err


def test_wheels_create_uploads_blobs(tmp_path, capsys):
    out = tmp_path / 'wheels'
    out.mkdir()
    (out / 'lmdeploy-0.18.0-cp312-cp312-manylinux_2_28_x86_64.whl').write_bytes(b'PK fake wheel')
    with KaggleStub() as stub, environ(stub.env(str(tmp_path / 'home'))):
        rc = cli_wheels(['--out', str(out), '--no-download', '--push', '--dataset', 'tester/aimo2-wheels'])
    assert rc == 0, capsys.readouterr()
    assert stub.names() == ['GetDatasetStatus', 'StartBlobUpload', 'PUT', 'StartBlobUpload', 'PUT', 'CreateDataset']
    starts = [r['body'] for r in stub.requests if r['name'] == 'StartBlobUpload']
    assert sorted(s['name'] for s in starts) == ['aimo2-wheels.txt', 'lmdeploy-0.18.0-cp312-cp312-manylinux_2_28_x86_64.whl']
    assert all(s['type'] == 'DATASET' for s in starts)
    create = stub.body('CreateDataset')
    assert (create['ownerSlug'], create['slug'], create['licenseName']) == ('tester', 'aimo2-wheels', 'other')
    assert sorted(f['token'] for f in create['files']) == ['blob-token-1', 'blob-token-2']
    assert b'PK fake wheel' in stub.uploads.values()
    assert b'lmdeploy==0.18.0\n' in stub.uploads.values()  # aimo2-wheels.txt lists the wheel found


def test_wheels_existing_dataset_gets_a_version(tmp_path, capsys):
    out = tmp_path / 'wheels'
    with KaggleStub({'GetDatasetStatus': (200, {'status': 'ready'})}) as stub, environ(stub.env(str(tmp_path / 'home'))):
        rc = cli_wheels(['--out', str(out), '--no-download', '--push', '--dataset', 'tester/aimo2-wheels', '-m', 'lmdeploy 0.18.0'])
    assert rc == 0, capsys.readouterr()
    assert stub.names()[0] == 'GetDatasetStatus' and 'CreateDataset' not in stub.names()
    assert stub.names() == ['GetDatasetStatus', 'StartBlobUpload', 'PUT', 'CreateDatasetVersion']
    v = stub.body('CreateDatasetVersion')
    assert (v['ownerSlug'], v['datasetSlug'], v['body']['versionNotes']) == ('tester', 'aimo2-wheels', 'lmdeploy 0.18.0')
    assert v['body']['files'] == [{'token': 'blob-token-1'}]


def test_wheels_push_error(tmp_path, capsys):
    err = {'CreateDataset': (200, {'status': 'error', 'error': 'quota exceeded'})}
    with KaggleStub(err) as stub, environ(stub.env(str(tmp_path / 'home'))):
        rc = cli_wheels(['--out', str(tmp_path / 'w'), '--no-download', '--push', '--dataset', 'tester/aimo2-wheels'])
    assert rc == 1 and 'Dataset creation error: quota exceeded' in capsys.readouterr().err

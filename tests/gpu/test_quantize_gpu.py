"""`aimo2 quantize` on a real GPU: a random-weight Qwen2.5-0.5B-shaped model with the real R1 tokenizer (made into
/dev/shm, ~3 s), quantized with lmdeploy's AWQ on offline calibration blocks from tests/fixtures/data, the output checked
(AWQ W4 GEMM group 128, the size ratio), then loaded by lmdeploy's PyTorch engine with an int8 KV cache and generating.

    python -m pytest -q -m gpu tests/gpu/test_quantize_gpu.py    # after the .whl install line of bench/GPU.md
Set AIMO2_GPU_MODEL to quantize an existing bf16 model folder instead. ~2 minutes (engine start ~50 s)."""
from __future__ import annotations
import json, os, subprocess, sys
from pathlib import Path
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip('torch')
if not torch.cuda.is_available(): pytest.skip('no CUDA device', allow_module_level=True)
pytest.importorskip('lmdeploy')

from aimo2_nb.quantize import awq_layout_errors
from aimo2_nb.cli_data import cli_quantize

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / 'tests' / 'fixtures' / 'data'
SHAPE_05B = ['--mode', 'transformers', '--hidden', '896', '--layers', '24', '--heads', '14', '--kv', '2', '--inter', '4864',
             '--vocab', '151936', '--tie']

@pytest.fixture(scope='module')
def bf16_model() -> Path:
    if os.environ.get('AIMO2_GPU_MODEL'): return Path(os.environ['AIMO2_GPU_MODEL'])
    out = Path('/dev/shm/aimo2-qwen05-random-q')
    if not (out / 'generation_config.json').exists():
        subprocess.run([sys.executable, str(ROOT / '.gpu' / 'make_random_qwen2.py'), '--out', str(out),
                        '--tok', str(ROOT / '.gpu' / 'r1-tokenizer'), *SHAPE_05B], check=True, timeout=300)
    return out

@pytest.fixture(scope='module')
def awq_model(bf16_model) -> Path:
    out = Path('/dev/shm/aimo2-qwen05-awq')
    calib = sum((['--calib', str(FIX / f)] for f in ('generations.jsonl', 'sft_limo.jsonl', 'calib.jsonl')), [])
    rc = cli_quantize([str(bf16_model), '--out', str(out), '--overwrite', '--calib-samples', '16', '--calib-seqlen', '512',
                       *calib])
    assert rc == 0
    return out

def test_quantized_folder_is_turbomind_awq(awq_model, bf16_model):
    assert awq_layout_errors(awq_model) == []
    m = json.loads((awq_model / 'quantize.json').read_text())
    assert m['calib_blocks'] == 16 and m['size_ratio'] > 1.8  # 0.5B: tied bf16 embeddings stay; linear layers ~3.85x
    assert not list(awq_model.glob('*_stats.pth'))

def test_lmdeploy_loads_and_generates_w4kv8(awq_model):
    from lmdeploy import pipeline, GenerationConfig, PytorchEngineConfig
    pipe = pipeline(str(awq_model), backend_config=PytorchEngineConfig(model_format='awq', quant_policy=8,
                                                                      cache_max_entry_count=0.2, session_len=2048))
    try:
        outs = pipe([[{'role': 'user', 'content': 'What is 1 + 1?'}]] * 2,
                    gen_config=GenerationConfig(max_new_tokens=16, ignore_eos=True, do_sample=True, random_seed=1))
        assert [o.generate_token_len for o in outs] == [16, 16]
    finally:
        pipe.close()

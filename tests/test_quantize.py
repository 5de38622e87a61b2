"""AWQ quantization (aimo2_nb.quantize) on CPU: argument mapping, calibration blocks from text with a real (tiny)
tokenizer, the output checks, the run-config switch for the int8 KV cache, and, when lmdeploy + torch are installed
(see bench/GPU.md, "CPU CI"), lmdeploy's real quantizer run on a tiny random Qwen2 with offline calibration, its
output dequantized and compared with the float model."""
from __future__ import annotations
import contextlib, io, json
from pathlib import Path
import numpy as np
import pytest
from aimo2_nb.quantize import (QuantizeConfig, QuantizeError, awq_kwargs, awq_layout_errors, calib_batches, calib_texts,
                               dequantize_gemm, engine_settings, pack_int4, tokenizer_encoder, unpack_int4, write_safetensors_header)
from aimo2_nb.cli_data import cli_quantize

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / 'tests' / 'fixtures' / 'data'
CALIB = [str(FIX / 'calib.jsonl'), str(FIX / 'sft_limo.jsonl'), str(FIX / 'generations.jsonl')]

def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = cli_quantize(argv)
    return rc, out.getvalue(), err.getvalue()

def make_tokenizer(d: Path, vocab: int = 300) -> None:
    "A byte-level BPE trained on the fixture texts, saved as tokenizer.json (+ a transformers tokenizer_config)."
    pytest.importorskip('tokenizers')
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=['<unk>', '<s>', '</s>'],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(calib_texts(CALIB)), tr)
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / 'tokenizer.json'))
    (d / 'tokenizer_config.json').write_text(json.dumps(dict(tokenizer_class='PreTrainedTokenizerFast', bos_token='<s>',
                                                             eos_token='</s>', unk_token='<unk>')))
    (d / 'generation_config.json').write_text(json.dumps(dict(bos_token_id=1, eos_token_id=2)))

def fake_model(d: Path, arch: str = 'Qwen2ForCausalLM') -> Path:
    make_tokenizer(d)
    (d / 'config.json').write_text(json.dumps(dict(architectures=[arch], eos_token_id=2)))
    write_safetensors_header(d / 'model.safetensors', {'w': ('BF16', (8, 8))})
    return d

# ---------------------------------------------------------------- settings and arguments
def test_arguments_map_to_lmdeploy():
    kw = awq_kwargs(QuantizeConfig('/m', '/o', calib=['c.jsonl'], calib_samples=32, calib_seqlen=512, search_scale=True))
    assert kw == dict(model='/m', work_dir='/o', calib_dataset='wikitext2', calib_samples=32, calib_seqlen=512, batch_size=1,
                      w_bits=4, w_sym=False, w_group_size=128, search_scale=True, device='cuda', dtype='float16')
    inspect = pytest.importorskip('inspect')
    try: from lmdeploy.lite.apis.auto_awq import auto_awq
    except ImportError: return
    assert set(kw) <= set(inspect.signature(auto_awq).parameters)  # every key is a real parameter of lmdeploy 0.18

def test_calibration_blocks_with_a_real_tokenizer(tmp_path):
    make_tokenizer(tmp_path)
    encode, eos = tokenizer_encoder(tmp_path)
    assert eos == 2
    texts = list(calib_texts(CALIB))
    assert len(texts) == 30  # 10 calib + 10 LIMO + 10 generation rows
    blocks = calib_batches(texts, encode, n=6, seqlen=128, eos_id=eos)
    assert len(blocks) == 6 and all(len(b) == 128 for b in blocks)
    assert all(0 <= t < 300 for b in blocks for t in b) and any(2 in b for b in blocks)  # EOS separates texts
    # blocks are cut from the concatenation, in order: a block's tokens are a substring of the stream
    stream = []
    for t in texts: stream += encode(t) + [2]
    s = ' '.join(map(str, stream))
    assert all(' '.join(map(str, b)) in s for b in blocks)
    with pytest.raises(QuantizeError, match=r'need 1048576 tokens'):
        calib_batches(texts, encode, n=512, seqlen=2048, eos_id=eos)

def test_dry_run_plans_without_lmdeploy(tmp_path):
    m = fake_model(tmp_path / 'm')
    rc, out, err = run_cli([str(m), '--out', str(tmp_path / 'o'), *sum((['--calib', c] for c in CALIB), []),
                            '--calib-samples', '4', '--calib-seqlen', '64', '--dry-run'])
    assert rc == 0, err
    p = json.loads(out)
    assert (p['calib_blocks'], p['calib_tokens'], p['architecture'], p['turbomind_ok']) == (4, 256, 'Qwen2ForCausalLM', True)
    assert p['lmdeploy_args']['calib_samples'] == 4 and p['lmdeploy_args']['w_group_size'] == 128

def test_bad_inputs_exit_2_naming_the_problem(tmp_path):
    m = fake_model(tmp_path / 'm')
    cases = [
        ([str(tmp_path / 'none'), '--out', 'o', '--calib', CALIB[0]], 'model folder not found'),
        ([str(m), '--out', str(tmp_path / 'o')], 'calibration text is needed'),
        ([str(m), '--out', str(tmp_path / 'o'), '--calib', str(tmp_path / 'x.jsonl')], 'x.jsonl: calibration file not found'),
        ([str(m), '--out', str(tmp_path / 'o'), '--calib', CALIB[0], '--calib-samples', '64', '--calib-seqlen', '2048'],
         'calibration text too short'),
        ([str(m), '--out', str(tmp_path / 'o'), '--calib', CALIB[0], '--w-group-size', '96'], 'w_group_size: expected one of'),
        ([str(m), '--out', str(tmp_path / 'o'), '--calib', CALIB[0], '--calib-field', 'body'], "no column 'body'"),
        ([str(m), '--out', str(tmp_path / 'o'), '--calib-samples', '0', '--device', 'tpu'], 'device'),
        ([str(m), '--out', str(m), '--calib-samples', '0'], 'output folder is not empty'),
    ]
    for argv, msg in cases:
        rc, _, err = run_cli(argv + ['--dry-run'])
        assert rc == 2 and msg in err and 'Traceback' not in err, (argv, err)
    fake_model(tmp_path / 'g', arch='GPT2LMHeadModel')
    rc, _, err = run_cli([str(tmp_path / 'g'), '--out', str(tmp_path / 'o'), '--calib-samples', '0', '--dry-run'])
    assert rc == 2 and "'GPT2LMHeadModel' is not one lmdeploy's AWQ quantizes" in err

def test_kv_int8_switch_reaches_lmdeploy_config():
    from aimo2_nb.engines.lmdeploy import backend_kwargs, settings_config, QuantPolicy
    c = settings_config(engine_settings('/models/awq'))
    assert c.quant_policy is QuantPolicy.INT8 and c.model_format == 'awq'
    kw = backend_kwargs(c, n_gpus=4)
    assert (kw['quant_policy'], kw['model_format']) == (8, 'awq')
    assert backend_kwargs(settings_config(engine_settings('/m', quant_policy=0)))['quant_policy'] == 0
    try: from lmdeploy.messages import TurbomindEngineConfig
    except ImportError: return
    t = TurbomindEngineConfig(**kw)
    assert (t.quant_policy, t.model_format, t.tp) == (8, 'awq', 4)

def test_pack_roundtrip_and_layout_check(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.integers(0, 16, (128, 32))
    assert (unpack_int4(pack_int4(v)) == v).all()
    (tmp_path / 'config.json').write_text(json.dumps(dict(quantization_config=dict(
        quant_method='awq', version='gemv', bits=4, group_size=128, zero_point=True))))
    write_safetensors_header(tmp_path / 'a.safetensors', {'x.qweight': ('I32', (256, 8)), 'x.qzeros': ('I32', (2, 8)),
                                                          'x.scales': ('BF16', (2, 64))})
    errs = awq_layout_errors(tmp_path)
    assert "quantization_config.version is 'gemv', TurboMind needs 'gemm'" in errs
    assert any('expected I32/I32/F16' in e for e in errs)

# ---------------------------------------------------------------- lmdeploy's quantizer for real, on CPU
def tiny_qwen2(d: Path):
    torch = pytest.importorskip('torch')
    pytest.importorskip('transformers')
    from transformers import Qwen2Config, Qwen2ForCausalLM
    make_tokenizer(d)
    cfg = Qwen2Config(vocab_size=304, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2)
    cfg.architectures = ['Qwen2ForCausalLM']
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(cfg).to(torch.bfloat16).eval()
    m.save_pretrained(d)
    return m

def test_lmdeploy_awq_on_cpu_offline(tmp_path, monkeypatch):
    pytest.importorskip('lmdeploy.lite.apis.auto_awq', reason='lmdeploy not installed (see bench/GPU.md, CPU CI)')
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen2ForCausalLM
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    src, out = tmp_path / 'm', tmp_path / 'awq'
    ref = tiny_qwen2(src)
    import lmdeploy.lite.apis.calibrate as cal
    orig = cal.get_calib_loaders
    rc, o, err = run_cli([str(src), '--out', str(out), *sum((['--calib', c] for c in CALIB), []), '--calib-samples', '4',
                          '--calib-seqlen', '128', '--device', 'cpu'])
    assert rc == 0, err
    assert cal.get_calib_loaders is orig  # the offline loader was put back
    assert awq_layout_errors(out) == []
    q = json.loads((out / 'config.json').read_text())['quantization_config']
    assert (q['quant_method'], q['version'], q['bits'], q['group_size']) == ('awq', 'gemm', 4, 128)
    man = json.loads((out / 'quantize.json').read_text())
    assert man['calib_blocks'] == 4 and man['size_ratio'] > 1.3 and not (out / 'inputs_stats.pth').exists()
    assert 'quant_policy: 8' in o and 'model_format: awq' in o
    assert (out / 'tokenizer.json').is_file()
    # dequantize every layer into a float copy of the model: its logits must match the original's
    sd = load_file(str(out / 'model.safetensors'))
    full = {k: v.float() for k, v in sd.items() if not k.endswith(('.qweight', '.qzeros', '.scales'))}
    wrong = dict(full)
    for k in [k for k in sd if k.endswith('.qweight')]:
        l = k[:-len('.qweight')]
        w = dequantize_gemm(sd[k].numpy(), sd[l + '.qzeros'].numpy(), sd[l + '.scales'].float().numpy(), 128)
        full[l + '.weight'] = torch.from_numpy(np.ascontiguousarray(w))
        # the same with the packing order ignored: the check must notice
        nib = ((sd[k].numpy().astype(np.uint32)[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF).reshape(len(sd[k]), -1)
        z = ((sd[l + '.qzeros'].numpy().astype(np.uint32)[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF).reshape(len(sd[l + '.qzeros']), -1)
        s = sd[l + '.scales'].float().numpy()
        wrong[l + '.weight'] = torch.from_numpy(np.ascontiguousarray(((nib - np.repeat(z, 128, 0)) * np.repeat(s, 128, 0)).T.astype(np.float32)))
    ids = torch.tensor([calib_batches(calib_texts(CALIB), tokenizer_encoder(src)[0], 1, 64, 2)[0]])
    def logits(state):
        m = Qwen2ForCausalLM(ref.config).float().eval()
        missing, unexpected = m.load_state_dict(state, strict=False)
        assert not unexpected and all('rotary' in k for k in missing), (missing, unexpected)
        with torch.no_grad(): return m(ids).logits.flatten()
    base = ref.float()(ids).logits.detach().flatten()
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    good, bad = cos(base, logits(full)), cos(base, logits(wrong))
    print(f"logits cosine: dequantized {good:.4f}, wrong packing order {bad:.4f}")
    assert good > 0.95, good  # seen: 0.98 (4-bit random weights); a wrong packing order gives ~0
    assert bad < 0.5, (good, bad)

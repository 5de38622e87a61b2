"GPU-only tests: marked `gpu`, skipped unless CUDA and lmdeploy are present (run: python -m pytest -q -m gpu tests/gpu)."

def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU and lmdeploy (skipped otherwise)')

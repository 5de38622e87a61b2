"""A local stand-in for the competition's `kaggle_evaluation` package, written from the serving contract in
docs/kaggle.md (the real package is competition data and never enters this repository).

It keeps the parts of the contract a submission can break: `predict` is called serially from ONE non-main thread,
with one `polars.Series` (length 1) per CSV column, positionally; it must return a one-row polars/pandas DataFrame
with `id` equal to the served id (same dtype) and an int `answer` in range; every call after the first has a
deadline; the gateway writes `submission.parquet` in the working folder. Any breach raises `GatewayError`, as the
real gateway fails the submission.

Test knobs (environment): KAGGLE_EVALUATION_STUB_DEADLINE_S (per-call deadline after the first, default 1800),
KAGGLE_EVALUATION_STUB_CSV (the CSV `serve()` reads in a rerun), KAGGLE_EVALUATION_STUB_LOG (a JSON file the
gateway writes with one record per call).
"""

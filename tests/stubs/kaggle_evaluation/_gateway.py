"Shared gateway logic of the stand-in inference servers."
from __future__ import annotations
import concurrent.futures, json, os, threading, time
from pathlib import Path


class GatewayError(Exception):
    "The submission broke the serving contract (the real gateway fails the whole submission)."


def _polars():
    "polars, or None where it is not installed (then pandas serves, as on the GPU test machine)."
    if os.environ.get('KAGGLE_EVALUATION_STUB_PANDAS'): return None
    try:
        import polars
        return polars
    except ImportError: return None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class InferenceServer:
    "Serves the rows of a CSV to `predict`, one call at a time, from one worker thread."
    modulus = 1000

    def __init__(self, predict):
        if not callable(predict): raise GatewayError('the server needs a callable predict')
        self.predict = predict

    def serve(self):
        "A scoring rerun: serve the competition's test CSV."
        if not os.environ.get('KAGGLE_IS_COMPETITION_RERUN'): raise GatewayError('serve() outside a rerun')
        csv = os.environ.get('KAGGLE_EVALUATION_STUB_CSV')
        if not csv: raise GatewayError('KAGGLE_EVALUATION_STUB_CSV is not set')
        return self._run(Path(csv))

    def run_local_gateway(self, data_paths=None):
        "A local run: serve the rows of data_paths[0]."
        if not data_paths: raise GatewayError('run_local_gateway needs (csv_path,)')
        return self._run(Path(data_paths[0]))

    def _check(self, out, served_id, id_dtype):
        pl = _polars()
        if pl is None: return self._check_pandas(out, served_id, id_dtype)
        if not isinstance(out, pl.DataFrame):
            try:
                import pandas as pd
                if isinstance(out, pd.DataFrame): out = pl.from_pandas(out)
            except ImportError: pass
        if not isinstance(out, pl.DataFrame): raise GatewayError(f'predict returned {type(out).__name__}, not a DataFrame')
        if out.height != 1: raise GatewayError(f'predict returned {out.height} rows, not 1')
        if 'id' not in out.columns or 'answer' not in out.columns: raise GatewayError(f'predict returned columns {out.columns}')
        if out['id'].dtype != id_dtype: raise GatewayError(f"id dtype {out['id'].dtype} != served {id_dtype}")
        if out['id'].item(0) != served_id: raise GatewayError(f"id {out['id'].item(0)!r} != served {served_id!r}")
        ans = out['answer'].item(0)
        if not out['answer'].dtype.is_integer() or not _is_int(ans) or not 0 <= ans < self.modulus:
            raise GatewayError(f'answer {ans!r} ({out["answer"].dtype}) is not an int in 0..{self.modulus - 1}')
        return served_id, ans

    def _check_pandas(self, out, served_id, id_dtype):
        "The same contract where polars is not installed (the GPU test machine): pandas frames and Series."
        import pandas as pd
        if not isinstance(out, pd.DataFrame) and callable(getattr(out, 'to_pandas', None)): out = out.to_pandas()  # polars
        if not isinstance(out, pd.DataFrame): raise GatewayError(f'predict returned {type(out).__name__}, not a DataFrame')
        if len(out) != 1: raise GatewayError(f'predict returned {len(out)} rows, not 1')
        if 'id' not in out.columns or 'answer' not in out.columns: raise GatewayError(f'predict returned columns {list(out.columns)}')
        if out['id'].dtype != id_dtype: raise GatewayError(f"id dtype {out['id'].dtype} != served {id_dtype}")
        if out['id'].iloc[0] != served_id: raise GatewayError(f"id {out['id'].iloc[0]!r} != served {served_id!r}")
        ans = out['answer'].iloc[0]
        if not pd.api.types.is_integer_dtype(out['answer'].dtype) or not 0 <= int(ans) < self.modulus:
            raise GatewayError(f'answer {ans!r} ({out["answer"].dtype}) is not an int in 0..{self.modulus - 1}')
        return served_id, int(ans)

    def _table(self, csv: Path):
        "The served CSV: (number of rows, the row-i arguments, the id of row i, the id dtype, the submission writer)."
        pl = _polars()
        if pl is not None:
            df = pl.read_csv(csv)
            def write(rows):
                pl.DataFrame({'id': pl.Series([r[0] for r in rows], dtype=df['id'].dtype),
                              'answer': pl.Series([r[1] for r in rows], dtype=pl.Int64)}).write_parquet('submission.parquet')
            return df.height, lambda i: [df[c][i:i + 1] for c in df.columns], lambda i: df['id'][i], df['id'].dtype, write
        import pandas as pd  # where polars is not installed (the GPU test machine): pandas Series, pyarrow parquet
        df = pd.read_csv(csv)
        def write(rows):
            pd.DataFrame({'id': pd.Series([r[0] for r in rows], dtype=df['id'].dtype),
                          'answer': pd.Series([r[1] for r in rows], dtype='int64')}).to_parquet('submission.parquet')
        return len(df), lambda i: [df[c].iloc[i:i + 1].reset_index(drop=True) for c in df.columns], lambda i: df['id'].iloc[i], df['id'].dtype, write

    def _run(self, csv: Path):
        n, row, row_id, id_dtype, write = self._table(csv)
        deadline = float(os.environ.get('KAGGLE_EVALUATION_STUB_DEADLINE_S', '1800'))
        rows, log = [], []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='grpc-worker')
        try:
            for i in range(n):
                t0 = time.monotonic()
                fut = pool.submit(self._call, row(i))
                try: out, thread = fut.result(timeout=None if i == 0 else deadline)
                except concurrent.futures.TimeoutError:
                    raise GatewayError(f'predict call {i} exceeded the {deadline}s deadline') from None
                secs = time.monotonic() - t0
                rows.append(self._check(out, row_id(i), id_dtype))
                log.append({'row': i, 'id': str(row_id(i)), 'answer': rows[-1][1], 'seconds': secs, 'thread': thread,
                            'main_thread': thread == threading.main_thread().name})
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if os.environ.get('KAGGLE_EVALUATION_STUB_LOG'):
                Path(os.environ['KAGGLE_EVALUATION_STUB_LOG']).write_text(json.dumps(log, indent=1))
        write(rows)
        return rows

    def _call(self, args):
        import asyncio
        try:
            asyncio.get_running_loop(); raise GatewayError('predict thread has a running loop')
        except RuntimeError: pass
        return self.predict(*args), threading.current_thread().name

"Shared gateway logic of the stand-in inference servers."
from __future__ import annotations
import concurrent.futures, json, os, threading, time
from pathlib import Path


class GatewayError(Exception):
    "The submission broke the serving contract (the real gateway fails the whole submission)."


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
        import polars as pl
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

    def _run(self, csv: Path):
        import polars as pl
        df = pl.read_csv(csv)
        deadline = float(os.environ.get('KAGGLE_EVALUATION_STUB_DEADLINE_S', '1800'))
        rows, log = [], []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='grpc-worker')
        try:
            for i in range(df.height):
                args = [df[c][i:i + 1] for c in df.columns]
                t0 = time.monotonic()
                fut = pool.submit(self._call, args)
                try: out, thread = fut.result(timeout=None if i == 0 else deadline)
                except concurrent.futures.TimeoutError:
                    raise GatewayError(f'predict call {i} exceeded the {deadline}s deadline') from None
                secs = time.monotonic() - t0
                rows.append(self._check(out, df['id'][i], df['id'].dtype))
                log.append({'row': i, 'id': str(df['id'][i]), 'answer': rows[-1][1], 'seconds': secs, 'thread': thread,
                            'main_thread': thread == threading.main_thread().name})
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if os.environ.get('KAGGLE_EVALUATION_STUB_LOG'):
                Path(os.environ['KAGGLE_EVALUATION_STUB_LOG']).write_text(json.dumps(log, indent=1))
        pl.DataFrame({'id': pl.Series([r[0] for r in rows], dtype=df['id'].dtype),
                      'answer': pl.Series([r[1] for r in rows], dtype=pl.Int64)}).write_parquet('submission.parquet')
        return rows

    def _call(self, args):
        import asyncio
        try:
            asyncio.get_running_loop(); raise GatewayError('predict thread has a running loop')
        except RuntimeError: pass
        return self.predict(*args), threading.current_thread().name

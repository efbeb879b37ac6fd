"""The GIL is released during library work; objects are safe across threads."""

import threading
import time
import unittest

from _support import attnkit, np, random_qkv, session_config


def long_prefill_inputs(min_seconds=0.3):
    """A prefill whose attend takes at least `min_seconds` here (doubling the prompt until it does)."""
    rng = np.random.default_rng(0)
    tokens = 512
    while True:
        inputs = random_qkv(rng, tokens, num_heads=8, num_kv_heads=8, head_dim=64)
        with attnkit.Session(session_config(num_kv_heads=8, head_dim=64)) as session:
            start = time.perf_counter()
            session.attend(0, *inputs)
            seconds = time.perf_counter() - start
        if seconds >= min_seconds or tokens >= 32768:
            return inputs, seconds
        tokens *= 2


class ReleasesTheGil(unittest.TestCase):
    def test_python_runs_while_a_long_call_runs(self):
        inputs, seconds = long_prefill_inputs()
        session = attnkit.Session(session_config(num_kv_heads=8, head_dim=64))
        started, finished = threading.Event(), threading.Event()
        errors = []

        def work():
            try:
                started.set()
                session.attend(0, *inputs)
            except Exception as e:  # reported below
                errors.append(e)
            finally:
                finished.set()

        thread = threading.Thread(target=work)
        thread.start()
        started.wait()
        iterations = 0
        begin = time.perf_counter()
        while not finished.is_set():  # pure Python work; it only runs if the call let go of the GIL
            iterations += 1
        elapsed = time.perf_counter() - begin
        thread.join()
        session.close()
        self.assertEqual(errors, [])
        self.assertGreater(elapsed, seconds / 3, "the call was too short to tell")
        # Holding the GIL would leave this thread a few switch intervals at best.
        self.assertGreater(iterations, 10_000, f"{iterations} iterations in {elapsed:.3f} s")

    def test_one_session_from_two_threads_is_serialized(self):
        q, k, v = random_qkv(np.random.default_rng(1), 1)
        session = attnkit.Session(session_config())
        errors = []

        def decode(steps):
            try:
                for _ in range(steps):
                    session.attend(0, q, k, v)
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=decode, args=(300,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(session.positions(0)), 1200)
        session.close()

    def test_close_during_a_call_waits_for_it(self):
        inputs, _ = long_prefill_inputs(0.1)
        session = attnkit.Session(session_config(num_kv_heads=8, head_dim=64))
        started = threading.Event()
        results = []

        def work():
            started.set()
            results.append(session.attend(0, *inputs))

        thread = threading.Thread(target=work)
        thread.start()
        started.wait()
        time.sleep(0.02)
        session.close()  # returns at once; the C session is freed when the call ends
        self.assertTrue(session.closed)
        thread.join()
        self.assertEqual(len(results), 1)
        self.assertTrue(np.isfinite(results[0]).all())
        with self.assertRaises(attnkit.FailedPrecondition):
            session.attend(0, *inputs)


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""The GIL is released during library work; objects are safe across threads."""

import threading
import unittest

from _support import attnkit, np, random_qkv, session_config

# A bound on how long one attempt may wait for a thread: it only turns a hang into a failure.
WAIT_BOUND_SECONDS = 120


class OutputThatSignals:
    """The `out` tensor of attend(), with a __dlpack__ that sets `converted` when the module takes
    it. The module converts `out` last, then starts the call on the session (a closed session
    raises there), then releases the GIL for the library's work, and the library writes the result
    into `array` (NaN until then)."""

    def __init__(self, shape):
        self.array = np.full(shape, np.nan, np.float32)
        self.converted = threading.Event()

    def __dlpack__(self, *args, **kwargs):
        self.converted.set()
        return self.array.__dlpack__(*args, **kwargs)


def close_during_a_call():
    """One attempt to close a session from this thread while another thread's prefill attend() is
    inside the library. Returns (outcome, array, error, session): outcome "during" when the close
    came after the call had started and this thread then still saw the output unwritten;
    "before" when the close came before the call started (the call raised FailedPrecondition);
    "after" when the result was already written. Doubles the prompt until the first two happen."""
    rng = np.random.default_rng(0)
    for tokens in (1024, 2048, 4096, 8192):
        inputs = random_qkv(rng, tokens, num_heads=8, num_kv_heads=8, head_dim=64)
        session = attnkit.Session(session_config(num_kv_heads=8, head_dim=64))
        out = OutputThatSignals(inputs[0].shape)
        errors = []

        def work():
            try:
                session.attend(0, *inputs, out=out)
            except Exception as e:  # examined by the caller
                errors.append(e)

        thread = threading.Thread(target=work)
        thread.start()
        if not out.converted.wait(WAIT_BOUND_SECONDS):
            raise AssertionError("the call never converted its output")
        # Python runs here. Holding the GIL through the call would let this thread run only before
        # the call started (close() then frees the session and the call raises) or after it
        # returned (the output is then written): never between.
        session.close()
        unwritten = bool(np.isnan(out.array).any())
        thread.join(WAIT_BOUND_SECONDS)
        if thread.is_alive():
            raise AssertionError("the call did not return")
        error = errors[0] if errors else None
        if error is None and unwritten:
            return "during", out.array, None, session
        if error is None:
            continue  # the call finished before this thread ran: a longer prompt
        if isinstance(error, attnkit.FailedPrecondition):
            return "before", out.array, error, session
        raise error
    return "after", None, None, None


def close_during_a_call_attempts(attempts=10):
    """close_during_a_call() again while it closes before the call started (at most `attempts`
    times): the "during" outcome or None, and the outcomes of every attempt."""
    outcomes = []
    for _ in range(attempts):
        outcome = close_during_a_call()
        outcomes.append(outcome[0])
        if outcome[0] == "during":
            return outcome, outcomes
        if outcome[0] == "after":  # even the longest call ended before Python ran again
            break
    return None, outcomes


class ReleasesTheGil(unittest.TestCase):
    def test_python_runs_while_a_long_call_runs(self):
        # Proof by order of events, no clock: this thread's close() landed after the other thread's
        # call had started (the call succeeded) and before it wrote its result (NaN still seen),
        # which is only possible if the call let go of the GIL.
        found, outcomes = close_during_a_call_attempts()
        self.assertIsNotNone(found, f"never closed during the call: {outcomes}")
        _, array, _, session = found
        # The call went on with its session after close() and finished its work.
        self.assertTrue(np.isfinite(array).all())
        self.assertTrue(session.closed)

    def test_num_threads_is_set_read_back_and_validated(self):
        self.assertEqual(attnkit.get_num_threads(), 0)
        try:
            attnkit.set_num_threads(1)
            self.assertEqual(attnkit.get_num_threads(), 1)
            q, k, v = random_qkv(np.random.default_rng(3), 5)
            session = attnkit.Session(session_config())
            out = session.attend(0, q, k, v)
            self.assertTrue(np.isfinite(out).all())
            session.close()
            with self.assertRaises(attnkit.InvalidArgument) as raised:
                attnkit.set_num_threads(1025)
            self.assertIn("num_threads", str(raised.exception))
            self.assertEqual(attnkit.get_num_threads(), 1)
        finally:
            attnkit.set_num_threads(0)
        self.assertEqual(attnkit.get_num_threads(), 0)

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
        found, outcomes = close_during_a_call_attempts()
        self.assertIsNotNone(found, f"never closed during the call: {outcomes}")
        _, array, _, session = found
        self.assertTrue(session.closed)  # close() returned at once, the call went on
        self.assertTrue(np.isfinite(array).all())
        q, k, v = random_qkv(np.random.default_rng(2), 1, num_heads=8, num_kv_heads=8, head_dim=64)
        with self.assertRaises(attnkit.FailedPrecondition):
            session.attend(0, q, k, v)


if __name__ == "__main__":
    unittest.main(verbosity=2)

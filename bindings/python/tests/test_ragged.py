"""Session.attend_ragged / reset_sequence: a batch where one sequence prefills while the other
decodes, and a retired sequence's slot reused, computes for each sequence exactly what a session
of its own computes; bad counts raise InvalidArgument naming new_tokens."""

import unittest

from _support import attnkit, np, random_qkv

POLICY = ("eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 1 "
          "intermediate_tokens: 4 recent_tokens: 2 window_size: 2 }")


def config(batch):
    return (f"num_layers: 2 num_heads: 8 num_kv_heads: 4 head_dim: 8 page_size: 4 "
            f"batch_size: {batch} {POLICY}")


class RaggedTest(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(11)
        self.ragged = attnkit.Session(config(2))
        self.own = [attnkit.Session(config(1)), attnkit.Session(config(1))]

    def tearDown(self):
        self.ragged.close()
        for s in self.own:
            s.close()

    def step(self, counts):
        width = max(counts)
        for layer in range(2):
            q = np.full((2, 8, width, 8), np.nan, np.float32)
            k = np.full((2, 4, width, 8), np.nan, np.float32)
            v = np.full((2, 4, width, 8), np.nan, np.float32)
            want = [None, None]
            for b, n in enumerate(counts):
                if n == 0:
                    continue
                qb, kb, vb = random_qkv(self.rng, n)
                q[b, :, :n], k[b, :, :n], v[b, :, :n] = qb[0], kb[0], vb[0]
                want[b] = self.own[b].attend(layer, qb, kb, vb)
            out = self.ragged.attend_ragged(layer, q, k, v, counts)
            for b, n in enumerate(counts):
                if n:
                    np.testing.assert_array_equal(out[b, :, :n], want[b][0])
                np.testing.assert_array_equal(out[b, :, n:], 0)
        self.assertEqual(self.ragged.bytes_held, sum(s.bytes_held for s in self.own))

    def test_each_sequence_computes_what_its_own_session_computes(self):
        self.step([9, 0])
        self.step([1, 12])
        for _ in range(6):
            self.step([1, 1])
        self.ragged.reset_sequence(0)
        self.own[0].close()
        self.own[0] = attnkit.Session(config(1))
        self.assertEqual(self.ragged.next_position(0), 0)
        self.step([5, 1])
        for _ in range(4):
            self.step([1, 1])

    def test_bad_counts_raise_and_change_nothing(self):
        self.step([3, 2])
        held = self.ragged.bytes_held
        q, k, v = (np.zeros((2, h, 2, 8), np.float32) for h in (8, 4, 4))
        with self.assertRaisesRegex(attnkit.InvalidArgument, "new_tokens: sequence 1 brings 3"):
            self.ragged.attend_ragged(0, q, k, v, [1, 3])
        with self.assertRaisesRegex(attnkit.InvalidArgument, r"one count per sequence \(2\), got 1"):
            self.ragged.attend_ragged(0, q, k, v, [1])
        with self.assertRaises(TypeError):  # counts must be ints
            self.ragged.attend_ragged(0, q, k, v, ["1", "1"])
        with self.assertRaisesRegex(attnkit.InvalidArgument, r"sequence: must be in \[0, 2\), got 5"):
            self.ragged.reset_sequence(5)
        self.assertEqual(self.ragged.bytes_held, held)


if __name__ == "__main__":
    unittest.main()

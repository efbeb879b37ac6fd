"""Session.save / load / fork: the loaded and the forked session go on bit for bit as the original;
a bad blob raises InvalidArgument and changes nothing."""

import unittest

from _support import attnkit, np, random_qkv

CONFIG = ("num_layers: 1 num_heads: 8 num_kv_heads: 4 head_dim: 8 "
          "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
          "intermediate_tokens: 2 recent_tokens: 1 }")


class StateTest(unittest.TestCase):
    def test_save_load_and_fork_go_on_bit_for_bit(self):
        rng = np.random.default_rng(8)
        with attnkit.Session(CONFIG) as original, attnkit.Session(CONFIG) as loaded:
            original.attend(0, *random_qkv(rng, 6))
            blob = original.save()
            self.assertIsInstance(blob, bytes)
            loaded.load(blob)
            with original.fork() as fork:
                self.assertIsInstance(fork, attnkit.Session)
                for _ in range(5):  # a 4-token budget: every step evicts
                    step = random_qkv(rng, 1)
                    want = original.attend(0, *step)
                    np.testing.assert_array_equal(loaded.attend(0, *step), want)
                    np.testing.assert_array_equal(fork.attend(0, *step), want)
                np.testing.assert_array_equal(fork.positions(0), original.positions(0))
            np.testing.assert_array_equal(loaded.positions(0), original.positions(0))
            before = loaded.save()
            with self.assertRaisesRegex(attnkit.InvalidArgument, "blob: truncated"):
                loaded.load(blob[:-1])
            with self.assertRaisesRegex(attnkit.InvalidArgument, "checksum"):
                altered = bytearray(blob)
                altered[len(blob) // 2] ^= 1
                loaded.load(altered)
            self.assertEqual(loaded.save(), before)

    def test_blob_of_another_config_is_refused(self):
        rng = np.random.default_rng(9)
        with attnkit.Session(CONFIG) as a, \
                attnkit.Session(CONFIG.replace("intermediate_tokens: 2", "intermediate_tokens: 3")) as b:
            a.attend(0, *random_qkv(rng, 3))
            with self.assertRaisesRegex(attnkit.InvalidArgument, "intermediate_tokens"):
                b.load(a.save())


if __name__ == "__main__":
    unittest.main()

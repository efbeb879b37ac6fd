"""Session.observe (queries that score the cache without entering it) and ratio mode."""

import unittest

from _support import attnkit, attnkit_pb2, np, random_qkv

SHAPE = "num_layers: 1 num_heads: 8 num_kv_heads: 4 head_dim: 8 "
DEFERRED_H2O = ("eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
                "intermediate_tokens: 2 recent_tokens: 1 defer_eviction_to_decode: true }")


def full_attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v in float64, every query over every key (GQA)."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True) @ v


class ObserveTest(unittest.TestCase):
    def test_output_is_attention_over_the_whole_cache_and_nothing_is_appended(self):
        rng = np.random.default_rng(3)
        q, k, v = random_qkv(rng, 12)
        with attnkit.Session(SHAPE + DEFERRED_H2O) as session:
            session.attend(0, q, k, v)
            held = session.bytes_held
            question = rng.standard_normal((1, 8, 4, 8)).astype(np.float32)
            out = session.observe(0, question, np.empty_like(question))
            np.testing.assert_allclose(out, full_attention(question, k, v), atol=1e-5)
            self.assertIsNone(session.observe(0, question))
            self.assertEqual(session.bytes_held, held)
            self.assertEqual(session.next_position(0), 12)
            self.assertEqual(session.stats().tokens_seen, 12)
            with self.assertRaisesRegex(attnkit.InvalidArgument, "layer"):
                session.observe(1, question)
            with self.assertRaisesRegex(attnkit.InvalidArgument, "out"):
                session.observe(0, question, np.empty((1, 8, 3, 8), np.float32))

    def test_a_question_keeps_the_token_it_attends(self):
        rng = np.random.default_rng(4)
        q, k, v = random_qkv(rng, 12)
        # Every query head aims at token 7's key (heads 2h and 2h+1 read kv head h).
        question = np.repeat(k[:, :, 7:8, :], 2, axis=1).repeat(3, axis=2) * 20
        step = random_qkv(rng, 1)
        kept = {}
        for observe in (False, True):
            with attnkit.Session(SHAPE + DEFERRED_H2O) as session:
                session.attend(0, q, k, v)
                if observe:
                    session.observe(0, question)
                session.attend(0, np.zeros_like(step[0]), step[1], step[2])
                kept[observe] = list(session.positions(0, 0, 0))
        self.assertEqual(len(kept[True]), 4)
        self.assertIn(7, kept[True])
        self.assertNotIn(7, kept[False])


class RatioModeTest(unittest.TestCase):
    def test_the_prompt_keeps_the_share_kvpress_keeps(self):
        config = attnkit_pb2.SessionConfig(num_layers=1, num_heads=8, num_kv_heads=4, head_dim=8)
        config.eviction.enabled = True
        config.eviction.algorithm = attnkit_pb2.H2O
        config.eviction.granularity = attnkit_pb2.PER_TOKEN
        config.eviction.schedule.compression_ratio = 0.3
        with attnkit.Session(config) as session:
            session.attend(0, *random_qkv(np.random.default_rng(5), 90))
            self.assertEqual(len(session.positions(0, 0, 0)), int(90 * (1 - 0.3)))  # 62
        config.eviction.schedule.compression_ratio = 1.0
        with self.assertRaisesRegex(attnkit.InvalidArgument, "schedule.compression_ratio"):
            attnkit.Session(config)


if __name__ == "__main__":
    unittest.main()

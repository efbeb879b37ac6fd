"""EvictionPolicy, SparseAttention and VisualPruner through the package (zero-copy inputs)."""

import unittest

from _support import attnkit, attnkit_pb2, np, random_qkv, reference_attention


class EvictionPolicyTest(unittest.TestCase):
    def test_observe_select_keeps_the_budget(self):
        config = attnkit_pb2.EvictionConfig(enabled=True, algorithm=attnkit_pb2.H2O,
                                            granularity=attnkit_pb2.PER_TOKEN, start_tokens=2,
                                            intermediate_tokens=4, recent_tokens=2)
        rng = np.random.default_rng(0)
        with attnkit.EvictionPolicy(config, num_layers=1, num_heads=8, num_kv_heads=4) as policy:
            self.assertFalse(policy.needs_keys)
            self.assertFalse(policy.per_head)
            self.assertEqual(policy.layer_budget(0), 8)
            weights = rng.random((1, 8, 20, 20)).astype(np.float32)
            weights = np.tril(weights)
            weights /= weights.sum(-1, keepdims=True)
            policy.observe(0, weights)
            (kept,) = policy.select(0, 20)
            self.assertEqual(kept.dtype, np.int64)
            self.assertEqual(len(kept), 8)
            self.assertTrue((np.diff(kept) > 0).all())
            self.assertEqual(list(kept[:2]), [0, 1])  # start area
            self.assertEqual(list(kept[-2:]), [18, 19])  # recent area
            with self.assertRaisesRegex(attnkit.InvalidArgument, "attention"):
                policy.observe(0, weights[0])

    def test_keys_for_key_norm(self):
        config = "enabled: true algorithm: KNORM granularity: PER_TOKEN recent_tokens: 2 " \
                 "intermediate_tokens: 2"
        with attnkit.EvictionPolicy(config, 1, 8, 4) as policy:
            self.assertTrue(policy.needs_keys)
            keys = np.ones((4, 10, 8), np.float32)
            keys[:, 3] *= 0.1  # lowest norm: the most important
            (kept,) = policy.select(0, 10, keys=keys)
            self.assertIn(3, kept)
            self.assertEqual(len(kept), 4)


@unittest.skipUnless(hasattr(attnkit, "SparseAttention"), "built without attnkit_sparse.h")
class SparseAttentionTest(unittest.TestCase):
    def test_dense_prefill_matches_reference(self):
        q, k, v = random_qkv(np.random.default_rng(1), 96)
        with attnkit.SparseAttention("mode: DENSE block_size: 32") as sparse:
            out, density = sparse.prefill(q, k, v)
            self.assertEqual(density, 1.0)
            np.testing.assert_allclose(out, reference_attention(q, k, v), atol=1e-5)
            mask = sparse.build_mask(q, k)
            self.assertEqual(mask.shape, (1, 1, 3, 3))
            np.testing.assert_array_equal(mask[0, 0], np.tril(np.ones((3, 3), np.uint8)))
            np.testing.assert_allclose(sparse.attention(q, k, v, mask), out, atol=1e-6)

    def test_tri_shape_is_sparser(self):
        q, k, v = random_qkv(np.random.default_rng(2), 512)
        config = attnkit_pb2.SparseAttentionConfig(mode=attnkit_pb2.TRI_SHAPE, block_size=32,
                                                   recent_size=64, last_query_size=32)
        with attnkit.SparseAttention(config) as sparse:
            _, density = sparse.prefill(q, k, v)
            self.assertLess(density, 1.0)


@unittest.skipUnless(hasattr(attnkit, "VisualPruner"), "built without attnkit_visual.h")
class VisualPrunerTest(unittest.TestCase):
    def test_divprune_and_ragged(self):
        rng = np.random.default_rng(3)
        features = rng.standard_normal((2, 16, 8)).astype(np.float32)
        config = attnkit_pb2.VisualPruningConfig(method=attnkit_pb2.DIVPRUNE, num_keep_tokens=4)
        with attnkit.VisualPruner(config) as pruner:
            with pruner.select(features) as selection:
                self.assertEqual(selection.num_images, 2)
                for image in range(2):
                    kept = selection.indices(image)
                    self.assertEqual(len(kept), 4)
                    self.assertTrue(((kept >= 0) & (kept < 16)).all())
                flat = selection.flat_indices()
                self.assertEqual(len(flat), 8)
                mask = np.zeros(40, np.uint8)
                mask[4:36] = 1
                positions = selection.kept_positions(mask)
                self.assertEqual(len(positions), 8 + 8)
            ragged = pruner.select(features.reshape(32, 8)[:28], image_sizes=[16, 12])
            self.assertEqual([ragged.image_size(i) for i in range(2)], [16, 12])
            with self.assertRaises(attnkit.InvalidArgument):
                attnkit.VisualPruner("method: DIVPRUNE num_keep_tokens: 40").select(features)


if __name__ == "__main__":
    unittest.main(verbosity=2)

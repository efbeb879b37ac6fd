"""Tensors: DLPack and buffer-protocol inputs, zero copy, strided views, wrong shapes and dtypes."""

import unittest

from _support import attnkit, np, random_qkv, reference_attention, session_config
from attnkit import _attnkit


def attend_once(q, k, v, out=None):
    with attnkit.Session(session_config()) as session:
        return session.attend(0, q, k, v, out=out)


class ZeroCopy(unittest.TestCase):
    def test_dlpack_view_is_the_array_memory_with_its_strides(self):
        base = np.zeros((4, 8, 3, 8), dtype=np.float32)
        view = base[1:2].transpose(0, 2, 1, 3)  # [1, 3, 8, 8], not contiguous
        self.assertFalse(view.flags.c_contiguous)
        info = _attnkit.describe_tensor(view)
        self.assertEqual(info["protocol"], "dlpack")
        self.assertEqual(info["data"], view.__array_interface__["data"][0])
        self.assertEqual(info["shape"], view.shape)
        self.assertEqual(info["strides"], tuple(s // 4 for s in view.strides))
        self.assertEqual((info["dtype_code"], info["dtype_bits"], info["device_type"]), (2, 32, 1))

    def test_buffer_protocol_fallback_for_read_only_arrays(self):
        array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2]
        array.flags.writeable = False  # numpy's __dlpack__ refuses read-only arrays
        info = _attnkit.describe_tensor(array)
        self.assertEqual(info["protocol"], "buffer")
        self.assertEqual(info["data"], array.__array_interface__["data"][0])
        self.assertEqual(info["strides"], tuple(s // 4 for s in array.strides))
        info = _attnkit.describe_tensor(memoryview(np.ones((2, 2), np.float16)))
        self.assertEqual((info["protocol"], info["dtype_bits"]), ("buffer", 16))

    def test_non_contiguous_views_match_contiguous_copies(self):
        rng = np.random.default_rng(1)
        tokens = 37
        # Token-major buffers [tokens, heads, dim], viewed as [1, heads, tokens, dim].
        q_buf = rng.standard_normal((tokens, 8, 8)).astype(np.float32)
        k_buf = rng.standard_normal((tokens, 4, 8)).astype(np.float32)
        v_buf = rng.standard_normal((tokens, 4, 8)).astype(np.float32)
        q, k, v = (b.transpose(1, 0, 2)[None] for b in (q_buf, k_buf, v_buf))
        out_buf = np.full((tokens, 8, 8), np.nan, dtype=np.float32)
        out_view = out_buf.transpose(1, 0, 2)[None]
        result = attend_once(q, k, v, out=out_view)
        self.assertIs(result, out_view)
        self.assertFalse(np.isnan(out_buf).any())  # written in place, through the strides
        dense = attend_once(*(np.ascontiguousarray(t) for t in (q, k, v)))
        self.assertTrue(dense.flags.c_contiguous)
        np.testing.assert_array_equal(out_view, dense)
        np.testing.assert_allclose(dense, reference_attention(q, k, v), rtol=1e-5, atol=1e-5)
        # Every-other-element slices (a stride of 2 in the last dimension) and read-only inputs.
        wide = np.repeat(np.ascontiguousarray(q), 2, axis=-1)
        sliced = wide[..., ::2]
        self.assertFalse(sliced.flags.c_contiguous)
        k_ro = np.ascontiguousarray(k)
        k_ro.flags.writeable = False
        np.testing.assert_array_equal(attend_once(sliced, k_ro, v), dense)

    def test_float16_inputs(self):
        rng = np.random.default_rng(2)
        q, k, v = random_qkv(rng, 5, dtype=np.float16)
        out = attend_once(q, k, v)
        self.assertEqual(out.dtype, np.float16)
        np.testing.assert_allclose(out.astype(np.float32), reference_attention(q, k, v), atol=2e-2)


class WrongTensors(unittest.TestCase):
    def setUp(self):
        self.session = attnkit.Session(session_config())
        self.q, self.k, self.v = random_qkv(np.random.default_rng(3), 4)

    def tearDown(self):
        self.session.close()

    def assert_invalid(self, pattern, *args, **kwargs):
        with self.assertRaisesRegex(attnkit.InvalidArgument, pattern) as caught:
            self.session.attend(0, *args, **kwargs)
        self.assertEqual(caught.exception.code, 3)

    def test_wrong_shapes(self):
        self.assert_invalid(r"^q: expected rank 4, got rank 3", self.q[0], self.k, self.v)
        self.assert_invalid(r"^k: expected \[1, 4, 4, 8\]", self.q, self.k[:, :2], self.v)
        self.assert_invalid(r"^v: ", self.q, self.k, self.v[:, :, :3])
        self.assert_invalid(r"^out: ", self.q, self.k, self.v, out=np.empty((1, 8, 4, 4), np.float32))

    def test_wrong_dtypes(self):
        self.assert_invalid(r"^q: expected float32, float16 or bfloat16, got float64",
                            self.q.astype(np.float64), self.k, self.v)
        self.assert_invalid(r"^k: .*got int32", self.q, self.k.astype(np.int32), self.v)
        self.assert_invalid(r"^out: .*got int64", self.q, self.k, self.v,
                            out=np.empty(self.q.shape, np.int64))

    def test_outputs_must_be_writable_and_not_overlap(self):
        read_only = np.empty(self.q.shape, np.float32)
        read_only.flags.writeable = False
        self.assert_invalid(r"^out: must be writable", self.q, self.k, self.v, out=read_only)
        overlapping = np.lib.stride_tricks.as_strided(np.empty(64, np.float32), self.q.shape,
                                                      (0, 0, 0, 4))
        self.assert_invalid(r"^out: ", self.q, self.k, self.v, out=overlapping)

    def test_not_tensors(self):
        with self.assertRaisesRegex(TypeError, "^q: expected a tensor"):
            self.session.attend(0, [[1.0]], self.k, self.v)
        with self.assertRaisesRegex(TypeError, "^k: expected a tensor"):
            self.session.attend(0, self.q, "abc", self.v)
        with self.assertRaisesRegex(TypeError, "^v: expected a tensor, got None"):
            self.session.attend(0, self.q, self.k, None)

    def test_session_still_works_after_errors(self):
        self.assert_invalid("^q: ", self.q[0], self.k, self.v)
        out = self.session.attend(0, self.q, self.k, self.v)
        np.testing.assert_allclose(out, reference_attention(self.q, self.k, self.v), atol=1e-5)


if __name__ == "__main__":
    unittest.main(verbosity=2)

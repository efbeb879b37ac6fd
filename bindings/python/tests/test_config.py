"""Configs: typed round trip through the library, bad configs, object lifetime, ABI and version."""

import re
import unittest

from google.protobuf import text_format

from _support import SOURCE_DIR, attnkit, attnkit_pb2, session_config

SNAPKV_TEXT = """
num_layers: 5 num_heads: 8 num_kv_heads: 4 head_dim: 8 page_size: 16
rope { theta: 10000 interleaved: true }
eviction {
  enabled: true algorithm: SNAPKV granularity: PER_GROUP group_size: 4
  start_tokens: 4 intermediate_tokens: 64 recent_tokens: 32 window_size: 8
  refined { algorithm: KVCRUSH kvcrush_anchor: MEAN refined_tokens: 8 }
  pooling { kernel_size: 5 }
}
sparse_attention { mode: TRI_SHAPE block_size: 64 last_query_size: 0 }
"""


class ConfigRoundTrip(unittest.TestCase):
    def test_typed_message_through_library_text_and_back(self):
        typed = text_format.Parse(SNAPKV_TEXT, attnkit_pb2.SessionConfig())
        text = attnkit.config_to_text(typed, attnkit_pb2.SessionConfig)
        self.assertIn("SNAPKV", text)
        back = attnkit.parse_config(text, attnkit_pb2.SessionConfig)
        self.assertEqual(back, typed)
        # `optional` presence survives (last_query_size: 0 is not "unset").
        self.assertTrue(back.sparse_attention.HasField("last_query_size"))
        self.assertEqual(back.SerializeToString(deterministic=True),
                         typed.SerializeToString(deterministic=True))

    def test_library_textproto_parse_matches_python_protobuf(self):
        self.assertEqual(attnkit.parse_config(SNAPKV_TEXT, attnkit_pb2.SessionConfig),
                         text_format.Parse(SNAPKV_TEXT, attnkit_pb2.SessionConfig()))

    def test_every_config_form_makes_a_session(self):
        typed = text_format.Parse(SNAPKV_TEXT, attnkit_pb2.SessionConfig())
        for config in (typed, typed.SerializeToString(), bytearray(typed.SerializeToString()),
                       SNAPKV_TEXT):
            with attnkit.Session(config) as session:
                self.assertEqual(session.bytes_held, 0)
        attnkit.validate_config(typed, attnkit_pb2.SessionConfig)

    def test_dict_configs(self):
        # The proto3 JSON mapping, as json.load gives it: camelCase or field names, enums by name.
        as_dict = {"numLayers": 5, "num_heads": 8, "numKvHeads": 4, "headDim": 8, "pageSize": 16,
                   "rope": {"theta": 10000, "interleaved": True},
                   "eviction": {"enabled": True, "algorithm": "SNAPKV", "granularity": "PER_GROUP",
                                "groupSize": 4, "startTokens": 4, "intermediateTokens": 64,
                                "recentTokens": 32, "windowSize": 8}}
        typed = attnkit_pb2.SessionConfig()
        text_format.Parse(SNAPKV_TEXT, typed)
        typed.ClearField("sparse_attention")
        typed.eviction.ClearField("refined")
        typed.eviction.ClearField("pooling")
        with attnkit.Session(as_dict) as session:
            self.assertEqual(session.bytes_held, 0)
        self.assertEqual(attnkit.parse_config(attnkit.config_to_text(
            as_dict, attnkit_pb2.SessionConfig), attnkit_pb2.SessionConfig), typed)
        # Library rules still apply, with the field path.
        with self.assertRaisesRegex(attnkit.InvalidArgument, "eviction.window_size"):
            attnkit.Session(dict(as_dict, eviction=dict(as_dict["eviction"], windowSize=-1)))
        # What the JSON mapping refuses names the field.
        with self.assertRaisesRegex(attnkit.InvalidArgument, "no_such_field"):
            attnkit.Session(dict(as_dict, no_such_field=1))
        with self.assertRaisesRegex(attnkit.InvalidArgument, "algorithm"):
            attnkit.validate_config({"enabled": True, "algorithm": "NOT_AN_ALGORITHM"},
                                    attnkit_pb2.EvictionConfig)

    def test_other_message_kinds(self):
        eviction = attnkit_pb2.EvictionConfig(enabled=True, algorithm=attnkit_pb2.H2O,
                                              granularity=attnkit_pb2.PER_TOKEN, start_tokens=2,
                                              recent_tokens=4)
        self.assertEqual(attnkit.parse_config(
            attnkit.config_to_text(eviction, attnkit_pb2.EvictionConfig),
            attnkit_pb2.EvictionConfig), eviction)
        visual = attnkit_pb2.VisualPruningConfig(method=attnkit_pb2.DIVPRUNE, num_keep_tokens=3)
        attnkit.validate_config(visual, attnkit_pb2.VisualPruningConfig)


class BadConfig(unittest.TestCase):
    def assert_invalid(self, config, field):
        with self.assertRaises(attnkit.InvalidArgument) as caught:
            attnkit.Session(config)
        error = caught.exception
        self.assertEqual(error.code, 3)
        self.assertIsInstance(error, attnkit.Error)
        self.assertIsInstance(error, ValueError)
        self.assertIn(field, str(error))
        return error

    def test_invalid_fields_are_named(self):
        self.assert_invalid(session_config(num_kv_heads=3), "num_kv_heads")
        self.assert_invalid(session_config(head_dim=-1), "head_dim")
        bad = session_config()
        bad.eviction.enabled = True
        bad.eviction.algorithm = attnkit_pb2.H2O
        bad.eviction.granularity = attnkit_pb2.PER_TOKEN
        bad.eviction.recent_tokens = 8
        bad.eviction.window_size = 4
        self.assert_invalid(bad, "eviction.window_size")
        with self.assertRaises(attnkit.InvalidArgument) as caught:
            attnkit.validate_config(bad, attnkit_pb2.SessionConfig)
        self.assertIn("eviction.window_size", str(caught.exception))

    def test_unparseable_configs(self):
        self.assert_invalid("num_layers: 1 no_such_field: 2", "no_such_field")
        self.assert_invalid(b"\xff\xff\xff", "SessionConfig")

    def test_wrong_message_or_type(self):
        with self.assertRaisesRegex(TypeError, "SessionConfig"):
            attnkit.Session(attnkit_pb2.EvictionConfig())
        with self.assertRaises(TypeError):
            attnkit.Session(42)


class Lifetime(unittest.TestCase):
    def test_context_manager_and_double_close(self):
        with attnkit.Session(session_config()) as session:
            self.assertFalse(session.closed)
        self.assertTrue(session.closed)
        session.close()  # a second close is a no-op
        with self.assertRaises(attnkit.FailedPrecondition) as caught:
            _ = session.bytes_held
        self.assertEqual(caught.exception.code, 9)
        self.assertIn("close", str(caught.exception))

    def test_policy_close(self):
        policy = attnkit.EvictionPolicy("enabled: true algorithm: H2O granularity: PER_TOKEN recent_tokens: 4", 1, 8, 4)
        policy.close()
        policy.close()
        with self.assertRaises(attnkit.FailedPrecondition):
            policy.reset()


class AbiAndVersion(unittest.TestCase):
    def test_abi_check(self):
        from attnkit import _attnkit
        self.assertEqual(_attnkit.abi_version(), _attnkit.HEADER_ABI_VERSION)
        self.assertEqual(attnkit.ABI_VERSION, _attnkit.HEADER_ABI_VERSION)
        attnkit._check_abi(1, 1)
        with self.assertRaisesRegex(ImportError, "ABI version 2"):
            attnkit._check_abi(1, 2)

    def test_version_matches_cmake_project(self):
        with open(f"{SOURCE_DIR}/CMakeLists.txt", encoding="utf-8") as f:
            version = re.search(r"project\(attnkit VERSION ([0-9.]+)", f.read()).group(1)
        self.assertEqual(attnkit.__version__, version)

    def test_error_classes_mirror_codes(self):
        self.assertIs(type(attnkit.from_status(3, "x")), attnkit.InvalidArgument)
        self.assertIs(type(attnkit.from_status(9, "x")), attnkit.FailedPrecondition)
        unknown = attnkit.from_status(99, "x")
        self.assertIs(type(unknown), attnkit.Error)
        self.assertEqual(unknown.code, 99)


if __name__ == "__main__":
    unittest.main(verbosity=2)

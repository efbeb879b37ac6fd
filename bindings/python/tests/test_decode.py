"""The decode loop on the real model (stories260k): the Python sample's forward pass through
attnkit.Session, against reference.json and against the C sample's output."""

import importlib.util
import json
import os
import subprocess
import sys
import unittest

from _support import BUILD_DIR, SOURCE_DIR, attnkit, models_dir, np

MODELS = models_dir()
SAMPLE = os.path.join(SOURCE_DIR, "samples", "python", "generate.py")
CONFIGS = os.path.join(SOURCE_DIR, "samples", "configs")


def load_sample():
    spec = importlib.util.spec_from_file_location("attnkit_sample_generate", SAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_timing(output):
    return [line for line in output.splitlines() if not line.startswith(b"generated ")]


@unittest.skipIf(MODELS is None, "../shared/models/stories260k is absent (set ATTNKIT_MODELS_DIR)")
class DecodeLoop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sample = load_sample()
        cls.model_dir = os.path.join(MODELS, "stories260k")
        cls.model = cls.sample.Model(os.path.join(cls.model_dir, "stories260K.bin"))
        with open(os.path.join(cls.model_dir, "reference.json"), encoding="utf-8") as f:
            cls.reference = json.load(f)

    def decode(self, config_file, steps):
        config = self.sample.session_config(os.path.join(CONFIGS, config_file), self.model)
        prompt = self.reference["prompt_ids"]
        generated = []
        with attnkit.Session(config) as session:
            logits = self.sample.forward(self.model, session, prompt)
            for _ in range(steps):
                generated.append(int(np.argmax(logits)))
                logits = self.sample.forward(self.model, session, generated[-1:])
            return generated, session.bytes_held, len(session.positions(0))

    def test_full_cache_matches_reference_greedy_ids(self):
        steps = 100
        generated, held, tokens = self.decode("full_cache.textproto", steps)
        prompt = self.reference["prompt_ids"]
        expected = self.reference["greedy_ids_full_cache"][len(prompt):len(prompt) + steps]
        self.assertEqual(generated, expected)
        self.assertEqual(tokens, len(prompt) + steps)  # the last token is attended too
        self.assertGreater(held, 0)

    def test_int8_pages_follow_the_full_cache_in_less_memory(self):
        # kv_format INT8 (groups of head_dim = 8 channels here) with a 16-token float32 window:
        # most of the cache is quantized, the greedy ids stay the full cache's.
        steps = 100
        generated, held, tokens = self.decode("int8_pages.textproto", steps)
        _, full_held, _ = self.decode("full_cache.textproto", steps)
        prompt = self.reference["prompt_ids"]
        expected = self.reference["greedy_ids_full_cache"][len(prompt):len(prompt) + steps]
        agree = sum(a == b for a, b in zip(generated, expected))
        self.assertGreaterEqual(agree, 95, f"{agree} of {steps} greedy ids as the full cache's")
        self.assertEqual(tokens, len(prompt) + steps)
        # A row of 8 channels: 8 int8 + one float16 scale = 10 bytes instead of 32.
        self.assertLess(held, 0.6 * full_held)

    def test_quest_reads_a_part_of_the_full_cache(self):
        # samples/configs/quest.textproto: 6 pages of 16 tokens read per kv head and decode step
        # in layers 2-4, nothing evicted; SessionStats counts what the decode steps read.
        config = self.sample.session_config(os.path.join(CONFIGS, "quest.textproto"), self.model)
        prompt = self.reference["prompt_ids"]
        steps = 200
        with attnkit.Session(config) as session:
            logits = self.sample.forward(self.model, session, prompt)
            for _ in range(steps):
                logits = self.sample.forward(self.model, session, [int(np.argmax(logits))])
            stats = session.stats()
            tokens = len(session.positions(0))
        self.assertEqual(tokens, len(prompt) + steps)  # nothing evicted
        self.assertGreater(stats.sparse_decode_tokens_held, 0)
        # Each choice reads at most 6 * 16 = 96 tokens of a longer cache.
        self.assertLess(stats.sparse_decode_tokens_read, stats.sparse_decode_tokens_held)
        self.assertGreater(stats.sparse_decode_tokens_read, 0)

    def test_snapkv_holds_the_budget(self):
        generated, held, tokens = self.decode("snapkv.textproto", 160)
        # Budget: start 4 + intermediate 64 + recent 32, evicted in groups of 4.
        self.assertLessEqual(tokens, 100)
        self.assertGreater(tokens, 90)
        self.assertEqual(len(generated), 160)

    def test_interval_schedule_evicts_every_32nd_decode_step(self):
        config = self.sample.session_config(os.path.join(CONFIGS, "snapkv_interval.textproto"),
                                            self.model)
        prompt = self.reference["prompt_ids"]
        budget, interval = 100, 32
        with attnkit.Session(config) as session:
            logits = self.sample.forward(self.model, session, prompt)
            held = [len(session.positions(0))]
            for _ in range(200):
                logits = self.sample.forward(self.model, session, [int(np.argmax(logits))])
                held.append(len(session.positions(0)))
            evictions = session.stats().evictions
        scheduled = 0
        for step in range(1, len(held)):
            with self.subTest(step=step):
                if step % interval == 0 and held[step - 1] + 1 > budget:
                    scheduled += 1
                    self.assertLessEqual(held[step], budget)
                    self.assertGreater(held[step], budget - 4)  # evicted in groups of 4
                else:
                    self.assertEqual(held[step], held[step - 1] + 1)
        self.assertGreaterEqual(scheduled, 3)
        self.assertGreater(max(held), budget)  # the cache grew past the budget between evictions
        self.assertLess(max(held), budget + interval)
        self.assertEqual(evictions, scheduled * 5)  # every layer (stories260k has 5)

    def test_python_sample_prints_what_the_c_sample_prints(self):
        c_sample = os.path.join(BUILD_DIR, "samples", "c", "attnkit_generate")
        if not BUILD_DIR or not os.path.exists(c_sample):
            self.skipTest(f"the C sample is not built ({c_sample})")
        env = dict(os.environ, ATTNKIT_MODELS_DIR=MODELS)
        for config, steps in (("full_cache.textproto", 100), ("snapkv.textproto", 400)):
            args = ["--model", self.model_dir, "--config", os.path.join(CONFIGS, config),
                    "--tokens", str(steps)]
            c_out = subprocess.run([c_sample] + args, check=True, capture_output=True, env=env)
            py_out = subprocess.run([sys.executable, SAMPLE] + args, check=True,
                                    capture_output=True, env=env)
            with self.subTest(config=config):
                self.assertEqual(without_timing(py_out.stdout), without_timing(c_out.stdout))
                # The story itself, not only the timing line: byte pieces print as their bytes
                # (newlines included), never as "<0x0A>".
                self.assertIn(b"Once upon a time", py_out.stdout)
                self.assertNotRegex(py_out.stdout, rb"<0x[0-9A-Fa-f]{2}>")


if __name__ == "__main__":
    unittest.main(verbosity=2)

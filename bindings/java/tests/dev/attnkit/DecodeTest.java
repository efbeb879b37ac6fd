package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.attnkit.proto.SessionConfig;
import dev.attnkit.samples.Generate;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The generation loop over the real stories260k model, attention through Session. */
class DecodeTest {
  static Generate.Model model;
  static int[] prompt;
  static int[] reference;

  @BeforeAll
  static void load() throws Exception {
    Path dir = TestSupport.stories260k();
    model = Generate.Model.load(dir.resolve("stories260K.bin"));
    String json = new String(Files.readAllBytes(dir.resolve("reference.json")), StandardCharsets.UTF_8);
    prompt = Generate.readIds(json, "prompt_ids");
    reference = Generate.readIds(json, "greedy_ids_full_cache");
  }

  /** Greedy decoding of {@code steps} tokens after the prompt. */
  static int[] decode(Session session, int steps) {
    float[] logits = new float[model.vocabSize];
    int[] generated = new int[steps];
    model.forward(session, prompt, 0, prompt.length, logits);
    for (int s = 0; s < steps; ++s) {
      generated[s] = Generate.argmax(logits, model.vocabSize);
      if (s + 1 < steps) model.forward(session, generated, s, 1, logits);
    }
    return generated;
  }

  @Test
  void fullCacheDecodingMatchesTheReference() {
    final int steps = 100;
    try (Session session = Session.create(Generate.sessionConfig("page_size: 16", model))) {
      int[] generated = decode(session, steps);
      assertArrayEquals(Arrays.copyOfRange(reference, prompt.length, prompt.length + steps), generated);
      assertEquals(prompt.length + steps - 1, session.positions(0, 0, 0).length);
      // A new prompt after reset decodes the same.
      session.reset();
      assertEquals(0, session.nextPosition(0));
      assertArrayEquals(generated, decode(session, steps));
    }
  }

  @Test
  void snapKvEvictionHoldsTheBudget() {
    final int steps = 300;
    String policies = "page_size: 16 eviction { enabled: true algorithm: SNAPKV granularity: PER_GROUP "
        + "group_size: 4 start_tokens: 4 intermediate_tokens: 64 recent_tokens: 32 window_size: 8 }";
    SessionConfig config = Generate.sessionConfig(policies, model);
    long fullBytes;
    try (Session full = Session.create(Generate.sessionConfig("page_size: 16", model))) {
      decode(full, steps);
      fullBytes = full.bytesHeld();
    }
    try (Session session = Session.create(config)) {
      int[] generated = decode(session, steps);
      for (int id : generated) assertTrue(id >= 0 && id < model.vocabSize);
      long[] positions = session.positions(0, 0, 0);
      assertTrue(positions.length <= 100 + 4, "tokens kept: " + positions.length);
      assertTrue(session.bytesHeld() < fullBytes / 2, session.bytesHeld() + " vs " + fullBytes);
      assertTrue(session.stats().getEvictions() > 0);
      // The first prompt tokens stay (start area); positions ascend.
      assertEquals(0, positions[0]);
      for (int i = 1; i < positions.length; ++i) assertTrue(positions[i] > positions[i - 1]);
    }
  }
}

package dev.attnkit;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Random;
import org.junit.jupiter.api.Assumptions;

final class TestSupport {
  private TestSupport() {}

  /** A SessionConfig textproto for a small model, plus {@code policies}. */
  static String sessionText(int layers, int heads, int kvHeads, int headDim, String policies) {
    return "num_layers: " + layers + " num_heads: " + heads + " num_kv_heads: " + kvHeads
        + " head_dim: " + headDim + " page_size: 4 " + policies;
  }

  static String sessionText() {
    return sessionText(2, 2, 1, 8, "");
  }

  static float[] random(long seed, int count) {
    Random random = new Random(seed);
    float[] values = new float[count];
    for (int i = 0; i < count; ++i) values[i] = (float) random.nextGaussian();
    return values;
  }

  /** ../shared/models/stories260k (ATTNKIT_MODELS_DIR); the test is skipped when it is absent. */
  static Path stories260k() {
    String models = System.getenv("ATTNKIT_MODELS_DIR");
    Path dir = models != null && !models.isEmpty()
        ? Paths.get(models, "stories260k")
        : Paths.get("..", "shared", "models", "stories260k");
    Assumptions.assumeTrue(Files.isDirectory(dir), "no model folder " + dir.toAbsolutePath());
    return dir;
  }
}

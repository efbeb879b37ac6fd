package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.TextFormat;
import dev.attnkit.proto.EvictionAlgorithm;
import dev.attnkit.proto.EvictionConfig;
import dev.attnkit.proto.Granularity;
import dev.attnkit.proto.RopeConfig;
import dev.attnkit.proto.SessionConfig;
import dev.attnkit.proto.SessionStats;
import dev.attnkit.proto.SparseAttentionConfig;
import dev.attnkit.proto.SparseAttentionMode;
import org.junit.jupiter.api.Test;

/** Typed configs (protobuf-java) through the library and back. */
class ConfigTest {
  static SessionConfig typedConfig() {
    return SessionConfig.newBuilder()
        .setNumLayers(2)
        .setNumHeads(4)
        .setNumKvHeads(2)
        .setHeadDim(8)
        .setPageSize(8)
        .setRope(RopeConfig.newBuilder().setTheta(10000).setInterleaved(true))
        .setEviction(
            EvictionConfig.newBuilder()
                .setEnabled(true)
                .setAlgorithm(EvictionAlgorithm.SNAPKV)
                .setGranularity(Granularity.PER_GROUP)
                .setGroupSize(4)
                .setStartTokens(4)
                .setIntermediateTokens(16)
                .setRecentTokens(8)
                .setWindowSize(4))
        .setSparseAttention(SparseAttentionConfig.newBuilder().setMode(SparseAttentionMode.DENSE))
        .build();
  }

  @Test
  void typedConfigRoundTripsThroughTheLibrarysText() throws Exception {
    SessionConfig config = typedConfig();
    Configs.validate(config);
    String text = Configs.toText(config);
    assertTrue(text.contains("SNAPKV"), text);
    assertTrue(text.contains("intermediate_tokens: 16"), text);
    // The library's text parses back to the same message, in the library and in protobuf-java.
    assertEquals(config, Configs.fromText(text, SessionConfig.class));
    assertEquals(config, TextFormat.parse(text, SessionConfig.class));
    assertEquals(config, SessionConfig.parseFrom(Configs.textToBinary(Configs.Kind.SESSION, text)));
  }

  @Test
  void sessionsFromTypedBytesAndTextAgree() {
    SessionConfig config = typedConfig();
    try (Session typed = Session.create(config);
        Session bytes = Session.create(config.toByteArray());
        Session text = Session.fromText(Configs.toText(config))) {
      SessionStats stats = typed.stats();
      assertEquals(8, stats.getPageSize());
      assertEquals(stats.getPageSize(), bytes.stats().getPageSize());
      assertEquals(stats.getPageSize(), text.stats().getPageSize());
      assertEquals(0, typed.bytesHeld());
      assertEquals(0, typed.nextPosition(0));
    }
  }

  @Test
  void everyKindRoundTrips() {
    EvictionConfig eviction = typedConfig().getEviction();
    assertEquals(eviction, Configs.fromText(Configs.toText(eviction), EvictionConfig.class));
    SparseAttentionConfig sparse =
        SparseAttentionConfig.newBuilder().setMode(SparseAttentionMode.TRI_SHAPE).setBlockSize(64).build();
    Configs.validate(sparse);
    assertEquals(sparse, Configs.fromText(Configs.toText(sparse), SparseAttentionConfig.class));
    assertEquals(Configs.Kind.VISUAL_PRUNING, Configs.Kind.of(dev.attnkit.proto.VisualPruningConfig.class));
  }
}

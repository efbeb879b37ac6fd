package dev.attnkit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.attnkit.AttnKitException.Code;
import dev.attnkit.proto.EvictionConfig;
import dev.attnkit.proto.SessionConfig;
import org.junit.jupiter.api.Test;

/** Bad configs raise AttnKitException with INVALID_ARGUMENT and the field's path. */
class ErrorTest {
  @Test
  void badTypedConfigNamesTheField() {
    SessionConfig config = ConfigTest.typedConfig().toBuilder().setNumKvHeads(3).build();
    AttnKitException e = assertThrows(AttnKitException.class, () -> Session.create(config));
    assertEquals(Code.INVALID_ARGUMENT, e.code());
    assertTrue(e.statusMessage().startsWith("num_kv_heads"), e.statusMessage());
    assertTrue(e.getMessage().startsWith("INVALID_ARGUMENT: num_kv_heads"), e.getMessage());
    AttnKitException validate = assertThrows(AttnKitException.class, () -> Configs.validate(config));
    assertEquals(e.statusMessage(), validate.statusMessage());
  }

  @Test
  void badNestedFieldNamesItsPath() {
    String text = TestSupport.sessionText(2, 2, 1, 8,
        "eviction { enabled: true start_tokens: -4 recent_tokens: 8 }");
    AttnKitException e = assertThrows(AttnKitException.class, () -> Session.fromText(text));
    assertEquals(Code.INVALID_ARGUMENT, e.code());
    assertTrue(e.statusMessage().contains("eviction.start_tokens"), e.statusMessage());
    AttnKitException validate = assertThrows(AttnKitException.class,
        () -> Configs.validateText(Configs.Kind.SESSION, text));
    assertEquals(Code.INVALID_ARGUMENT, validate.code());
    assertTrue(validate.statusMessage().contains("eviction.start_tokens"));
    EvictionConfig eviction = EvictionConfig.newBuilder().setEnabled(true).setStartTokens(-4).build();
    AttnKitException policy = assertThrows(AttnKitException.class,
        () -> EvictionPolicy.create(eviction, 2, 2, 1));
    assertTrue(policy.statusMessage().contains("start_tokens"), policy.statusMessage());
  }

  @Test
  void malformedInputIsInvalidArgument() {
    assertEquals(Code.INVALID_ARGUMENT,
        assertThrows(AttnKitException.class, () -> Session.fromText("num_layers: \"two\"")).code());
    assertEquals(Code.INVALID_ARGUMENT,
        assertThrows(AttnKitException.class, () -> EvictionPolicy.fromText("no_such_field: 1", 2, 4, 2)).code());
    assertEquals(Code.INVALID_ARGUMENT,
        assertThrows(AttnKitException.class, () -> Session.create(new byte[] {(byte) 0xff, 0x01, 0x02})).code());
    AttnKitException sparse = assertThrows(AttnKitException.class, () -> SparseAttention.fromText("block_size: -3"));
    assertEquals(Code.INVALID_ARGUMENT, sparse.code());
    assertTrue(sparse.statusMessage().contains("block_size"), sparse.statusMessage());
    AttnKitException visual = assertThrows(AttnKitException.class, () -> VisualPruner.fromText("method: UNIFORM_GRID keep_ratio: 2"));
    assertEquals(Code.INVALID_ARGUMENT, visual.code());
    assertTrue(visual.statusMessage().contains("keep_ratio"), visual.statusMessage());
  }

  @Test
  void codesAreNumberedLikeAbslStatusCode() {
    assertEquals(3, Code.INVALID_ARGUMENT.value());
    assertEquals(Code.FAILED_PRECONDITION, Code.of(9));
    assertEquals(Code.UNAUTHENTICATED, Code.of(16));
    assertEquals(Code.UNKNOWN, Code.of(99));
    for (Code code : Code.values()) assertEquals(code, Code.of(code.value()));
  }
}

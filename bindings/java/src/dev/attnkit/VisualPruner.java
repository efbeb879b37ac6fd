package dev.attnkit;

import dev.attnkit.internal.AttnKitNative;
import dev.attnkit.proto.VisualPruningConfig;

/**
 * Visual token pruning (CDPruner, DivPrune, random and uniform-grid baselines): which image tokens
 * of a VLM prompt to keep, from the image tokens' projector output (image_embeds), their features
 * (image_features) and the text embeddings (text_embeds).
 *
 * <p>Immutable: may be used by several threads at once. Close when done; selections it returned
 * stay valid.
 */
public final class VisualPruner implements AutoCloseable {
  private final NativeHandle handle;

  private VisualPruner(long pointer) {
    handle = NativeHandle.own(this, "VisualPruner", pointer, AttnKitNative::attnkit_visual_pruner_free);
  }

  public static VisualPruner create(VisualPruningConfig config) {
    return create(config.toByteArray());
  }

  /** From a serialized attnkit.v1.VisualPruningConfig. */
  public static VisualPruner create(byte[] config) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_visual_pruner_create(config, created);
    return new VisualPruner(created[0]);
  }

  public static VisualPruner fromText(String text) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_visual_pruner_create_from_text(text, created);
    return new VisualPruner(created[0]);
  }

  /**
   * Selects the tokens to keep for images of equal size N: imageEmbeds [N, C] or [images, N, C],
   * imageFeatures [N, Dv] or [images, N, Dv], textEmbeds [M, C]. DIVPRUNE, RANDOM_SUBSET and
   * UNIFORM_GRID read only imageFeatures (the others may be null).
   */
  public VisualSelection select(Tensor imageEmbeds, Tensor imageFeatures, Tensor textEmbeds) {
    long[] created = new long[1];
    handle.run(p -> AttnKitNative.attnkit_visual_pruner_select(p, imageEmbeds, imageFeatures, textEmbeds, created));
    return new VisualSelection(created[0]);
  }

  /** As {@link #select} for images of different sizes, their rows concatenated. */
  public VisualSelection selectRagged(
      Tensor imageEmbeds, Tensor imageFeatures, long[] imageSizes, Tensor textEmbeds) {
    long[] created = new long[1];
    handle.run(
        p ->
            AttnKitNative.attnkit_visual_pruner_select_ragged(
                p, imageEmbeds, imageFeatures, imageSizes, textEmbeds, created));
    return new VisualSelection(created[0]);
  }

  public boolean isClosed() {
    return handle.isClosed();
  }

  @Override
  public void close() {
    handle.close();
  }
}

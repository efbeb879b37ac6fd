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

  /**
   * A pruner from a typed configuration.
   *
   * @param config the visual pruning configuration
   * @return the new pruner, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for an invalid configuration
   */
  public static VisualPruner create(VisualPruningConfig config) {
    return create(config.toByteArray());
  }

  /**
   * A pruner from a serialized attnkit.v1.VisualPruningConfig.
   *
   * @param config a serialized attnkit.v1.VisualPruningConfig
   * @return the new pruner, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for bytes that do not parse or an invalid
   *     configuration
   */
  public static VisualPruner create(byte[] config) {
    AttnKit.load();
    long[] created = new long[1];
    AttnKitNative.attnkit_visual_pruner_create(config, created);
    return new VisualPruner(created[0]);
  }

  /**
   * A pruner from an attnkit.v1.VisualPruningConfig in textproto.
   *
   * @param text an attnkit.v1.VisualPruningConfig in textproto
   * @return the new pruner, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for text that does not parse or an invalid
   *     configuration
   */
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
   *
   * @param imageEmbeds the projector output [N, C] or [images, N, C], or null where not read
   * @param imageFeatures the image features [N, Dv] or [images, N, Dv]
   * @param textEmbeds the text embeddings [M, C], or null where not read
   * @return the kept tokens of every image, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for a bad or missing tensor
   * @throws IllegalStateException after {@link #close()}
   */
  public VisualSelection select(Tensor imageEmbeds, Tensor imageFeatures, Tensor textEmbeds) {
    long[] created = new long[1];
    handle.run(p -> AttnKitNative.attnkit_visual_pruner_select(p, imageEmbeds, imageFeatures, textEmbeds, created));
    return new VisualSelection(created[0]);
  }

  /**
   * As {@link #select} for images of different sizes, their rows concatenated.
   *
   * @param imageEmbeds the projector output [sum of imageSizes, C], or null where not read
   * @param imageFeatures the image features [sum of imageSizes, Dv]
   * @param imageSizes the tokens of each image, in order
   * @param textEmbeds the text embeddings [M, C], or null where not read
   * @return the kept tokens of every image, to be closed
   * @throws AttnKitException INVALID_ARGUMENT for a bad or missing tensor or sizes
   * @throws IllegalStateException after {@link #close()}
   */
  public VisualSelection selectRagged(
      Tensor imageEmbeds, Tensor imageFeatures, long[] imageSizes, Tensor textEmbeds) {
    long[] created = new long[1];
    handle.run(
        p ->
            AttnKitNative.attnkit_visual_pruner_select_ragged(
                p, imageEmbeds, imageFeatures, imageSizes, textEmbeds, created));
    return new VisualSelection(created[0]);
  }

  /**
   * Whether {@link #close()} was called.
   *
   * @return true once the pruner is closed
   */
  public boolean isClosed() {
    return handle.isClosed();
  }

  /** Frees the pruner (its selections stay valid); a second close does nothing. */
  @Override
  public void close() {
    handle.close();
  }
}

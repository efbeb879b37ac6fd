package dev.attnkit;

import dev.attnkit.internal.AttnKitNative;

/**
 * The kept tokens of every image of one {@link VisualPruner} call. Read-only: may be read by
 * several threads at once. Close when done.
 */
public final class VisualSelection implements AutoCloseable {
  private final NativeHandle handle;

  VisualSelection(long pointer) {
    handle = NativeHandle.own(this, "VisualSelection", pointer, AttnKitNative::attnkit_visual_selection_free);
  }

  /**
   * The number of images of the call.
   *
   * @return the images the selection covers
   * @throws IllegalStateException after {@link #close()}
   */
  public int numImages() {
    return (int) (long) handle.call(AttnKitNative::attnkit_visual_selection_num_images);
  }

  /**
   * The number of tokens of one image.
   *
   * @param image the image, from 0
   * @return the tokens of image {@code image} before pruning
   * @throws IndexOutOfBoundsException outside [0, {@link #numImages()})
   * @throws IllegalStateException after {@link #close()}
   */
  public long imageSize(int image) {
    checkImage(image);
    return handle.call(p -> AttnKitNative.attnkit_visual_selection_image_size(p, image));
  }

  /**
   * The kept tokens of one image.
   *
   * @param image the image, from 0
   * @return the kept token indices of image {@code image}, local to it and ascending
   * @throws IndexOutOfBoundsException outside [0, {@link #numImages()})
   * @throws IllegalStateException after {@link #close()}
   */
  public long[] keptIndices(int image) {
    checkImage(image);
    return handle.call(
        p -> {
          long kept = AttnKitNative.attnkit_visual_selection_num_kept(p, image);
          long address = AttnKitNative.attnkit_visual_selection_indices(p, image);
          return AttnKitNative.attnkit_java_copy_int64s(address, kept);
        });
  }

  /**
   * The kept tokens of all images.
   *
   * @return indices into the concatenated image tokens, ascending
   * @throws IllegalStateException after {@link #close()}
   */
  public long[] flatIndices() {
    long[][] indices = new long[1][];
    handle.run(p -> AttnKitNative.attnkit_visual_selection_flat_indices(p, indices));
    return indices[0];
  }

  /**
   * The positions to keep in a prompt whose image tokens are marked nonzero in {@code imageTokenMask}
   * (one byte per prompt token): every other position plus the kept image tokens, ascending.
   *
   * @param imageTokenMask one byte per prompt token, nonzero for image tokens
   * @return the prompt positions to keep, ascending
   * @throws AttnKitException INVALID_ARGUMENT when the mask's image tokens do not match the images
   * @throws IllegalStateException after {@link #close()}
   */
  public long[] keptPositions(byte[] imageTokenMask) {
    long[][] positions = new long[1][];
    handle.run(p -> AttnKitNative.attnkit_visual_selection_kept_positions(p, imageTokenMask, positions));
    return positions[0];
  }

  /**
   * Whether {@link #close()} was called.
   *
   * @return true once the selection is closed
   */
  public boolean isClosed() {
    return handle.isClosed();
  }

  /** Frees the selection; a second close does nothing. */
  @Override
  public void close() {
    handle.close();
  }

  private void checkImage(int image) {
    int images = numImages();
    if (image < 0 || image >= images) {
      throw new IndexOutOfBoundsException("image " + image + " of " + images);
    }
  }
}

"""attnkit.VisualPruner: visual token pruning (CDPruner, DivPrune, baselines; attnkit_visual_pruner)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from attnkit import _attnkit, _config, _tensors
from attnkit._handle import Handle
from attnkit._types import ConfigLike, Int64Array, TensorLike


class VisualSelection(Handle):
    """The kept image tokens of one select() call. Read-only; several threads may read it."""

    __slots__ = ()
    _native: _attnkit.VisualSelection

    def __init__(self, native: _attnkit.VisualSelection) -> None:
        self._native = native

    @property
    def num_images(self) -> int:
        """The number of images of the selection."""
        return self._native.num_images()

    def image_size(self, image: int) -> int:
        """The number of tokens of image ``image``."""
        return self._native.image_size(image)

    def indices(self, image: int) -> Int64Array:
        """Kept token indices of ``image`` (local to it, ascending) as an int64 numpy array."""
        return _tensors.int64_array(self._native.indices(image))

    def flat_indices(self) -> Int64Array:
        """Kept tokens of all images as indices into the concatenated image tokens."""
        return _tensors.int64_array(self._native.flat_indices())

    def kept_positions(self, image_token_mask: Union[bytes, bytearray, memoryview,
                                                     TensorLike]) -> Int64Array:
        """Positions to keep in a prompt whose image tokens are marked (nonzero) by
        ``image_token_mask`` (one byte or bool per prompt position): every other position plus the
        kept image tokens, ascending."""
        mask = bytes(memoryview(image_token_mask).cast("B")) if not isinstance(
            image_token_mask, (bytes, bytearray)) else image_token_mask
        return _tensors.int64_array(self._native.kept_positions(mask))


class VisualPruner(Handle):
    """A pruner from an ``attnkit_pb2.VisualPruningConfig``, its bytes, or textproto. Immutable: may be
    used by several threads at once."""

    __slots__ = ()
    _native: _attnkit.VisualPruner

    def __init__(self, config: ConfigLike) -> None:
        self._native = _attnkit.VisualPruner(
            _config.to_wire(config, "attnkit.v1.VisualPruningConfig"))

    def select(self, image_features: TensorLike, image_embeds: Optional[TensorLike] = None,
               text_embeds: Optional[TensorLike] = None,
               image_sizes: Optional[Sequence[int]] = None) -> VisualSelection:
        """Selects the image tokens to keep.

        Images of equal size: ``image_features`` ``[N, Dv]`` or ``[num_images, N, Dv]``,
        ``image_embeds`` the same leading shape with ``C`` columns, ``text_embeds`` ``[M, C]``.
        With ``image_sizes`` (one count per image) the rows of all images are concatenated. CDPruner
        needs all three tensors; DIVPRUNE, RANDOM_SUBSET and UNIFORM_GRID only the features.
        """
        sizes = None if image_sizes is None else [int(n) for n in image_sizes]
        if sizes is None:
            native = self._native.select(image_embeds, image_features, text_embeds)
        else:
            native = self._native.select(image_embeds, image_features, text_embeds, sizes)
        return VisualSelection(native)

package attnkit

import (
	"runtime"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
	"github.com/attnkit/attnkit/bindings/go/internal/capi"
)

// VisualPruner selects which image tokens of a VLM prompt to keep (CDPruner, DivPrune, random and
// uniform-grid baselines). It keeps no state between calls.
type VisualPruner struct {
	h handle
}

// VisualSelection is the result of a select call: per image, the kept token indices (local to the
// image, ascending) and the image's token count; and all kept tokens as indices into the
// concatenated image tokens (Flat, ascending).
type VisualSelection struct {
	Kept       [][]int64
	ImageSizes []int64
	Flat       []int64
}

// NewVisualPruner creates a pruner from a typed config.
func NewVisualPruner(config *attnkitpb.VisualPruningConfig) (*VisualPruner, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	if config == nil {
		return nil, newError(InvalidArgument, "NewVisualPruner: nil config")
	}
	bytes, err := marshal(config)
	if err != nil {
		return nil, err
	}
	var ptr uintptr
	if err := fromCapi(capi.Attnkit_visual_pruner_create(bytes, &ptr)); err != nil {
		return nil, err
	}
	return newVisualPruner(ptr), nil
}

// NewVisualPrunerFromText creates a pruner from an attnkit.v1.VisualPruningConfig textproto.
func NewVisualPrunerFromText(text string) (*VisualPruner, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	var ptr uintptr
	if err := fromCapi(capi.Attnkit_visual_pruner_create_from_text(text, &ptr)); err != nil {
		return nil, err
	}
	return newVisualPruner(ptr), nil
}

func newVisualPruner(ptr uintptr) *VisualPruner {
	p := &VisualPruner{}
	p.h.set(ptr, capi.Attnkit_visual_pruner_free, "VisualPruner")
	runtime.SetFinalizer(p, (*VisualPruner).Close)
	return p
}

// Close frees the pruner. Closing again returns nil.
func (p *VisualPruner) Close() error {
	runtime.SetFinalizer(p, nil)
	return p.h.close()
}

// Select selects the image tokens to keep for images of equal size N: imageEmbeds [N, C] or
// [images, N, C], imageFeatures [N, Dv] or [images, N, Dv], textEmbeds [M, C]. DIVPRUNE,
// RANDOM_SUBSET and UNIFORM_GRID use only imageFeatures (pass nil for the others).
func (p *VisualPruner) Select(imageEmbeds, imageFeatures, textEmbeds Tensor) (*VisualSelection, error) {
	return p.selectTokens("Select", imageEmbeds, imageFeatures, nil, textEmbeds)
}

// SelectRagged is Select for images of different sizes: the rows of all images are concatenated,
// image i holding imageSizes[i] consecutive rows.
func (p *VisualPruner) SelectRagged(imageEmbeds, imageFeatures Tensor, imageSizes []int64, textEmbeds Tensor) (*VisualSelection, error) {
	if len(imageSizes) == 0 {
		return nil, newError(InvalidArgument, "image_sizes: at least one image is needed")
	}
	return p.selectTokens("SelectRagged", imageEmbeds, imageFeatures, imageSizes, textEmbeds)
}

func (p *VisualPruner) selectTokens(method string, imageEmbeds, imageFeatures Tensor, imageSizes []int64, textEmbeds Tensor) (*VisualSelection, error) {
	tensors, release, err := describeAll([]string{"image_embeds", "image_features", "text_embeds"},
		[]Tensor{imageEmbeds, imageFeatures, textEmbeds}, false)
	if err != nil {
		return nil, err
	}
	defer release()
	var selection *VisualSelection
	err = p.h.use(method, func(ptr uintptr) error {
		var handle uintptr
		var err error
		if imageSizes == nil {
			err = capi.Attnkit_visual_pruner_select(ptr, tensors[0], tensors[1], tensors[2], &handle)
		} else {
			err = capi.Attnkit_visual_pruner_select_ragged(ptr, tensors[0], tensors[1], imageSizes, tensors[2], &handle)
		}
		if err != nil {
			return fromCapi(err)
		}
		defer capi.Attnkit_visual_selection_free(handle)
		images := int(capi.Attnkit_visual_selection_num_images(handle))
		selection = &VisualSelection{Kept: make([][]int64, images), ImageSizes: make([]int64, images)}
		for i := 0; i < images; i++ {
			selection.ImageSizes[i] = capi.Attnkit_visual_selection_image_size(handle, int64(i))
			kept := int(capi.Attnkit_visual_selection_num_kept(handle, int64(i)))
			selection.Kept[i] = capi.CopyInt64s(capi.Attnkit_visual_selection_indices(handle, int64(i)), kept)
		}
		return fromCapi(capi.Attnkit_visual_selection_flat_indices(handle, &selection.Flat))
	})
	if err != nil {
		return nil, err
	}
	return selection, nil
}

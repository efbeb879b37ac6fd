package attnkit

import (
	"testing"

	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
)

func TestVisualPrunerSelect(t *testing.T) {
	p, err := NewVisualPruner(&attnkitpb.VisualPruningConfig{Method: attnkitpb.VisualPruningMethod_DIVPRUNE, NumKeepTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const tokens, dim = 8, 4
	features := NewTensor(filled(tokens*dim, 3), tokens, dim)
	selection, err := p.Select(nil, features, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(selection.Kept) != 1 || len(selection.Kept[0]) != 3 || selection.ImageSizes[0] != tokens {
		t.Fatalf("selection %+v", selection)
	}
	if len(selection.Flat) != 3 || selection.Flat[0] != selection.Kept[0][0] {
		t.Fatalf("flat %v, kept %v", selection.Flat, selection.Kept)
	}
	// Two images of 5 and 3 tokens, each keeping 3.
	ragged, err := p.SelectRagged(nil, features, []int64{5, 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(ragged.Kept) != 2 || len(ragged.Flat) != 6 || ragged.Flat[3] < 5 {
		t.Fatalf("ragged %+v", ragged)
	}
	// A budget larger than the image is the library's INVALID_ARGUMENT.
	_, err = p.Select(nil, NewTensor(filled(2*dim, 1), 2, dim), nil)
	asError(t, err, InvalidArgument)
	p.Close()
	_, err = p.Select(nil, features, nil)
	asError(t, err, FailedPrecondition)
}

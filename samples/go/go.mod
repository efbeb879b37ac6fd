module github.com/attnkit/attnkit/samples/go

go 1.19

require (
	github.com/attnkit/attnkit/bindings/go v0.0.0
	google.golang.org/protobuf v1.28.1
)

# ctest go_source_module: a new Go module in a temporary folder outside the source and build trees,
# with a replace to the source folder bindings/go (MODULE_DIR) and google.golang.org/protobuf from
# PROTOBUF_DIR, builds, vets and runs a short program. The go environment (offline, caches, and
# PKG_CONFIG_PATH at an attnkit.pc) comes from the caller. Prints the program's output line.
foreach(var GO MODULE_DIR PROTOBUF_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "source_module_test.cmake: -D${var}=... is required")
  endif()
endforeach()

set(tmp "$ENV{TMPDIR}")
if(NOT tmp)
  set(tmp "/tmp")
endif()
string(RANDOM LENGTH 10 suffix)
set(dir "${tmp}/attnkit-go-module-${suffix}")
file(MAKE_DIRECTORY "${dir}")

file(WRITE "${dir}/go.mod" "module example.com/fresh

go 1.19

require (
\tgithub.com/attnkit/attnkit/bindings/go v0.0.0
\tgoogle.golang.org/protobuf v1.28.1
)

replace github.com/attnkit/attnkit/bindings/go => ${MODULE_DIR}

replace google.golang.org/protobuf => ${PROTOBUF_DIR}
")
# Go slices and C memory (AllocTensor) in one call; v is 0.5 everywhere, so out is too.
file(WRITE "${dir}/main.go" [=[package main

import (
	"fmt"
	"log"

	"github.com/attnkit/attnkit/bindings/go/attnkit"
	"github.com/attnkit/attnkit/bindings/go/attnkitpb"
)

func main() {
	session, err := attnkit.NewSession(&attnkitpb.SessionConfig{NumLayers: 1, NumHeads: 2, NumKvHeads: 1, HeadDim: 4})
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()
	out, err := attnkit.AllocTensor(1, 2, 3, 4)
	if err != nil {
		log.Fatal(err)
	}
	defer out.Close()
	q, k, v := make([]float32, 24), make([]float32, 12), make([]float32, 12)
	for i := range v {
		q[i], k[i], v[i] = float32(i)/10, float32(i%4)/4, 0.5
	}
	if err := session.Attend(0, attnkit.NewTensor(q, 1, 2, 3, 4), attnkit.NewTensor(k, 1, 1, 3, 4),
		attnkit.NewTensor(v, 1, 1, 3, 4), out); err != nil {
		log.Fatal(err)
	}
	held, err := session.BytesHeld()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("source module: attnkit %s, out[0] = %g, bytes held %d\n", attnkit.Version(), out.Data()[0], held)
}
]=])

function(run_go)
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY "${dir}" RESULT_VARIABLE result
                  OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    file(REMOVE_RECURSE "${dir}")
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR "${command} failed (${result}):\n${output}")
  endif()
  set(output "${output}" PARENT_SCOPE)
endfunction()

# The module resolves to the source folder, not to a staged copy.
run_go("${GO}" list -m -f "{{.Replace.Dir}}" github.com/attnkit/attnkit/bindings/go)
string(STRIP "${output}" replaced)
if(NOT replaced STREQUAL MODULE_DIR)
  file(REMOVE_RECURSE "${dir}")
  message(FATAL_ERROR "the module resolves to '${replaced}', not ${MODULE_DIR}")
endif()
run_go("${GO}" build -o "${dir}/fresh" .)
run_go("${GO}" vet .)
run_go("${dir}/fresh")
file(REMOVE_RECURSE "${dir}")
message(STATUS "${output}")

// Command doccheck lists the exported names of Go packages (directories given as arguments, test
// files aside) that have no doc comment: functions, methods of exported types, types, constants
// and variables (a group's comment counts for its names). It exits 1 when it lists any. The ctest
// go_doc runs it on bindings/go/attnkit: every exported name of the API is documented.
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	fset := token.NewFileSet()
	var missing []string
	for _, dir := range os.Args[1:] {
		pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ParseComments)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, pkg := range pkgs {
			for name, f := range pkg.Files {
				report := func(pos token.Pos, what string) {
					missing = append(missing, fmt.Sprintf("%s:%d: %s", filepath.Base(name), fset.Position(pos).Line, what))
				}
				for _, decl := range f.Decls {
					switch d := decl.(type) {
					case *ast.FuncDecl:
						if !d.Name.IsExported() {
							continue
						}
						if d.Recv != nil {
							t := d.Recv.List[0].Type
							if s, ok := t.(*ast.StarExpr); ok {
								t = s.X
							}
							if id, ok := t.(*ast.Ident); ok && !id.IsExported() {
								continue
							}
						}
						if d.Doc == nil {
							report(d.Pos(), "func "+d.Name.Name)
						}
					case *ast.GenDecl:
						for _, spec := range d.Specs {
							switch s := spec.(type) {
							case *ast.TypeSpec:
								if s.Name.IsExported() && s.Doc == nil && d.Doc == nil {
									report(s.Pos(), "type "+s.Name.Name)
								}
							case *ast.ValueSpec:
								for _, n := range s.Names {
									if n.IsExported() && s.Doc == nil && d.Doc == nil && s.Comment == nil {
										report(n.Pos(), "value "+n.Name)
									}
								}
							}
						}
					}
				}
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		fmt.Println(m)
	}
	if len(missing) > 0 {
		os.Exit(1)
	}
}

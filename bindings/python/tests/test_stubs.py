"""The package is typed (PEP 561) and its stubs cannot go stale: py.typed is shipped, the extension's
stub (_attnkit.pyi) declares exactly the names the extension defines (module level and per type, with
properties as properties), every attnkit_pb2 module has a stub declaring exactly its names, and every
public function and method of the package is annotated with hints that resolve. Where mypy is
installed, a user's program type-checks clean under --strict and a wrong one fails."""

import ast
import glob
import importlib
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import typing
import unittest

import attnkit
from attnkit import _attnkit

PACKAGE_DIR = os.path.dirname(os.path.abspath(attnkit.__file__))


def public(names):
    return {name for name in names if not name.startswith("_")}


def parse_stub(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def stub_names(body):
    """Public names a stub body declares: functions, classes, annotated and plain assignments."""
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return public(names)


def is_property(node):
    return isinstance(node, ast.FunctionDef) and any(
        isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


class ExtensionStub(unittest.TestCase):
    """attnkit/_attnkit.pyi against attnkit._attnkit as built."""

    @classmethod
    def setUpClass(cls):
        path = os.path.join(PACKAGE_DIR, "_attnkit.pyi")
        cls.stub = parse_stub(path)  # beside the extension, where type checkers look

    def test_module_names_match(self):
        declared, defined = stub_names(self.stub.body), public(dir(_attnkit))
        self.assertEqual(defined - declared, set(), "defined by the extension, missing in the stub")
        self.assertEqual(declared - defined, set(), "declared in the stub, not in the extension")

    def test_type_members_match(self):
        classes = [n for n in self.stub.body if isinstance(n, ast.ClassDef)]
        self.assertTrue(classes)
        for node in classes:
            runtime = getattr(_attnkit, node.name)
            with self.subTest(type=node.name):
                self.assertIsInstance(runtime, type)
                declared = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
                defined = public(dir(runtime))
                self.assertEqual(defined - set(declared), set(), "missing in the stub")
                self.assertEqual(public(declared) - defined, set(), "not in the extension")
                for name in defined:
                    attribute = inspect.getattr_static(runtime, name)
                    runtime_property = inspect.isdatadescriptor(attribute)
                    self.assertEqual(is_property(declared[name]), runtime_property,
                                     f"{node.name}.{name}: property in one, method in the other")

    def test_stub_functions_are_annotated(self):
        for node in ast.walk(self.stub):
            if isinstance(node, ast.FunctionDef):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                for arg in args:
                    if arg.arg != "self":
                        self.assertIsNotNone(arg.annotation, f"{node.name}({arg.arg})")
                self.assertIsNotNone(node.returns, f"{node.name} has no return type")


class ProtoStubs(unittest.TestCase):
    """attnkit/v1/*_pb2.pyi (protoc --pyi_out) beside every generated module, naming what it defines."""

    def test_every_pb2_module_has_a_matching_stub(self):
        modules = sorted(glob.glob(os.path.join(PACKAGE_DIR, "v1", "*_pb2.py")))
        self.assertTrue(modules, "no attnkit/v1/*_pb2.py")
        for path in modules:
            name = os.path.splitext(os.path.basename(path))[0]
            with self.subTest(module=name):
                stub = path + "i"
                self.assertTrue(os.path.exists(stub), f"{stub} is missing")
                module = importlib.import_module(f"attnkit.v1.{name}")
                defined = {n for n in public(dir(module)) if not inspect.ismodule(getattr(module, n))}
                declared = stub_names(parse_stub(stub).body)
                self.assertEqual(defined - declared, set(), "missing in the stub")
                self.assertEqual(declared - defined, set(), "not in the module")


class PackageAnnotations(unittest.TestCase):
    """py.typed is shipped, so every public function and method of the package must be annotated."""

    def test_py_typed_is_shipped(self):
        self.assertTrue(os.path.exists(os.path.join(PACKAGE_DIR, "py.typed")))

    def callables(self):
        """(qualified name, function) for every public function and method reachable from __all__."""
        for name in attnkit.__all__:
            value = getattr(attnkit, name)
            if inspect.isfunction(value):
                yield name, value
            elif inspect.isclass(value) and value.__module__.startswith("attnkit.") and not \
                    value.__module__.endswith("_pb2"):
                for member_name, member in inspect.getmembers(value):
                    if member_name.startswith("_") and member_name not in ("__init__", "__enter__",
                                                                          "__exit__"):
                        continue
                    if isinstance(member, property):
                        member = member.fget
                    if inspect.isfunction(member) and member.__module__.startswith("attnkit"):
                        yield f"{name}.{member_name}", member

    def test_public_functions_are_annotated(self):
        checked = 0
        for name, function in self.callables():
            with self.subTest(function=name):
                signature = inspect.signature(function)
                for parameter in list(signature.parameters.values()):
                    if parameter.name in ("self", "cls"):
                        continue
                    self.assertIsNot(parameter.annotation, inspect.Parameter.empty,
                                     f"{name}({parameter.name}) has no annotation")
                self.assertIsNot(signature.return_annotation, inspect.Signature.empty,
                                 f"{name} has no return annotation")
                typing.get_type_hints(function)  # every annotation resolves
                checked += 1
        # Session, EvictionPolicy, SparseAttention, VisualPruner, VisualSelection and the functions.
        self.assertGreater(checked, 30)


# A user's program, correct: under mypy --strict it must check clean, with the types it reveals.
USER_PROGRAM = """
    import numpy as np
    import attnkit
    from attnkit import attnkit_pb2

    config = attnkit_pb2.SessionConfig(num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4)
    config.eviction.enabled = True
    q = np.ones((1, 2, 3, 4), np.float32)
    with attnkit.Session(config) as session:
        session.attend(0, q, q[:, :1], q[:, :1])
        held: int = session.bytes_held
        reveal_type(session.positions(0))
        reveal_type(session.stats().tokens_held)
    reveal_type(attnkit.parse_config("num_layers: 2", attnkit_pb2.SessionConfig))
    out, density = attnkit.SparseAttention("pattern: DENSE").prefill(q, q, q)
    reveal_type(density)
    reveal_type(attnkit.EvictionPolicy(config.eviction, 1, 2, 1).select(0, 10))
    try:
        attnkit.validate_config({"numLayers": 2}, attnkit_pb2.SessionConfig)
    except attnkit.InvalidArgument as e:
        reveal_type(e.code)
"""
INT64_ARRAY = r"numpy\.ndarray\[Any, numpy\.dtype\[numpy\.signedinteger\[numpy\.[\w.]*_64Bit\]\]\]"
REVEALED = [INT64_ARRAY, r"builtins\.int", r"attnkit\.v1\.session_pb2\.SessionConfig", r"builtins\.float",
            r"builtins\.list\[" + INT64_ARRAY + r"\]", r"builtins\.int"]
# The same user's mistakes: a misspelt config field and a wrong argument type.
MISTAKES = """
    import attnkit
    from attnkit import attnkit_pb2

    config = attnkit_pb2.SessionConfig(num_layerz=1)
    attnkit.Session(config).positions("0")
"""


@unittest.skipUnless(shutil.which("mypy"), "mypy is not installed (Debian: apt-get install mypy)")
class TypeChecker(unittest.TestCase):
    """mypy reads the annotations, the extension's stub and attnkit_pb2's stubs as a user would."""

    def mypy(self, program):
        with tempfile.TemporaryDirectory(prefix="attnkit-mypy-") as tmp:
            path = os.path.join(tmp, "program.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(program))
            # The package under test (the build tree's or an installed one), as the user's import finds it.
            env = dict(os.environ, MYPYPATH="", PYTHONPATH=os.path.dirname(PACKAGE_DIR))
            result = subprocess.run(
                ["mypy", "--strict", "--no-error-summary", "--python-executable", sys.executable,
                 "--cache-dir", os.path.join(tmp, "cache"), "program.py"],
                env=env, cwd=tmp, capture_output=True, text=True)
            return result.returncode, [line.split(": ", 1)[1] for line in result.stdout.splitlines()
                                       if line.startswith("program.py:")]

    def test_a_correct_program_checks_clean(self):
        status, lines = self.mypy(USER_PROGRAM)
        errors = [line for line in lines if line.startswith("error")]
        self.assertEqual(errors, [])
        self.assertEqual(status, 0, lines)
        revealed = [line.split('Revealed type is "', 1)[1].rstrip('"') for line in lines
                    if "Revealed type is" in line]
        self.assertEqual(len(revealed), len(REVEALED), revealed)
        for got, pattern in zip(revealed, REVEALED):
            self.assertRegex(got, "^" + pattern + "$")

    def test_mistakes_are_found(self):
        status, lines = self.mypy(MISTAKES)
        self.assertNotEqual(status, 0)
        text = "\n".join(lines)
        self.assertIn('Unexpected keyword argument "num_layerz" for "SessionConfig"', text)
        self.assertIn('Argument 1 to "positions" of "Session" has incompatible type "str"; expected "int"',
                      text)


if __name__ == "__main__":
    unittest.main(verbosity=2)

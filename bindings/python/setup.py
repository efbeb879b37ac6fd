"""pip install bindings/python: the attnkit package over an already built libattnkit.

    ./attnkit.sh build
    python3 -m venv --system-site-packages .venv          # Debian's python3: numpy, protobuf
    .venv/bin/pip install --no-build-isolation --no-index ./bindings/python

Finds the C headers in the source tree and libattnkit.so in $ATTNKIT_BUILD_DIR/capi (default
build/, as attnkit.sh), generates attnkit_pb2 with protoc ($PROTOC or protoc on PATH), and copies
libattnkit.so.<ABI> into the package beside the extension (found through $ORIGIN), so the installed
package needs nothing from the build tree. Nothing is downloaded.
"""

import glob
import os
import re
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.abspath(os.environ.get("ATTNKIT_SOURCE_DIR") or os.path.join(HERE, "..", ".."))
BUILD_DIR = os.path.abspath(os.environ.get("ATTNKIT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build"))
LIBRARY_DIR = os.path.join(BUILD_DIR, "capi")


def cmake_value(pattern):
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt"), encoding="utf-8") as f:
        return re.search(pattern, f.read()).group(1)


VERSION = cmake_value(r"project\(attnkit VERSION ([0-9.]+)")
ABI_VERSION = cmake_value(r"set\(ATTNKIT_ABI_VERSION ([0-9]+)\)")
SONAME = f"libattnkit.so.{ABI_VERSION}"


def library_file():
    path = os.path.join(LIBRARY_DIR, SONAME)
    if not os.path.exists(path):
        raise SystemExit(f"attnkit: {path} not found; build the library first (./attnkit.sh build) "
                         f"or point ATTNKIT_BUILD_DIR at the CMake build directory")
    return os.path.realpath(path)


class BuildPy(build_py):
    """Also generates attnkit/v1/*_pb2.py and their stubs (*_pb2.pyi) from proto/ (protoc)."""

    def run(self):
        super().run()
        protoc = os.environ.get("PROTOC") or shutil.which("protoc")
        if not protoc:
            raise SystemExit("attnkit: protoc not found (Debian: protobuf-compiler; or set PROTOC)")
        proto_root = os.path.join(SOURCE_DIR, "proto")
        protos = sorted(glob.glob(os.path.join(proto_root, "attnkit", "v1", "*.proto")))
        os.makedirs(os.path.join(self.build_lib, "attnkit", "v1"), exist_ok=True)
        subprocess.check_call([protoc, f"--python_out={self.build_lib}", f"--pyi_out={self.build_lib}",
                               "-I", proto_root] + protos)
        open(os.path.join(self.build_lib, "attnkit", "v1", "__init__.py"), "a").close()


class BuildExt(build_ext):
    """Also copies libattnkit.so.<ABI> next to the extension."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "attnkit", SONAME)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(library_file(), target)


library_file()  # fail early with a clear message
extension = Extension(
    "attnkit._attnkit",
    sources=sorted(glob.glob("src/*.c")),
    depends=["src/attnkit_py.h"],
    include_dirs=[os.path.join(SOURCE_DIR, "capi", "include")]
    + ([os.environ["DLPACK_INCLUDE_DIR"]] if os.environ.get("DLPACK_INCLUDE_DIR") else []),
    library_dirs=[LIBRARY_DIR],
    libraries=["attnkit"],
    runtime_library_dirs=["$ORIGIN"],
    extra_compile_args=["-std=c11", "-Wno-cast-function-type", "-fvisibility=hidden"],
)

setup(
    name="attnkit",
    version=VERSION,
    description="KV cache eviction, sparse prefill attention and visual token pruning (C ABI binding)",
    packages=["attnkit"],
    # PEP 561: the package is typed (inline annotations, stubs of the extension and of attnkit_pb2).
    package_data={"attnkit": ["py.typed", "*.pyi"]},
    ext_modules=[extension],
    cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
    install_requires=["numpy>=1.22", "protobuf>=3.19"],
    python_requires=">=3.8",
    zip_safe=False,
)

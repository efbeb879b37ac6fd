"""The documented install: `pip install --no-build-isolation --no-index` of bindings/python into a
venv of Debian's python3 with --system-site-packages, then `import attnkit` from anywhere."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from _support import BUILD_DIR, SOURCE_DIR


@unittest.skipUnless(BUILD_DIR, "ATTNKIT_BUILD_DIR is not set (ctest sets it)")
class PipInstall(unittest.TestCase):
    def test_pip_install_into_a_venv(self):
        with tempfile.TemporaryDirectory(prefix="attnkit-install-") as tmp:
            # A copy of bindings/python, so pip's in-tree build leaves the checkout clean.
            source = os.path.join(tmp, "python")
            shutil.copytree(os.path.join(SOURCE_DIR, "bindings", "python"), source,
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            venv = os.path.join(tmp, "venv")
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv],
                           check=True)
            env = dict(os.environ, ATTNKIT_SOURCE_DIR=SOURCE_DIR, ATTNKIT_BUILD_DIR=BUILD_DIR,
                       PIP_DISABLE_PIP_VERSION_CHECK="1")
            env.pop("PYTHONPATH", None)  # only the installed package may be found
            python = os.path.join(venv, "bin", "python")
            install = subprocess.run(
                [python, "-m", "pip", "install", "--no-build-isolation", "--no-index", source],
                env=env, capture_output=True, text=True)
            self.assertEqual(install.returncode, 0, install.stdout + install.stderr)
            check = subprocess.run(
                [python, "-c", "import attnkit, numpy as np; print(attnkit.__version__); "
                 "from attnkit import attnkit_pb2 as pb; "
                 "s = attnkit.Session(pb.SessionConfig(num_layers=1, num_heads=2, num_kv_heads=1, "
                 "head_dim=4)); q = np.ones((1, 2, 3, 4), np.float32); "
                 "k = np.ones((1, 1, 3, 4), np.float32); "
                 "print(float(s.attend(0, q, k, k).sum())); print(attnkit.__file__); "
                 "import os; d = os.path.dirname(attnkit.__file__); "
                 "print(all(os.path.exists(os.path.join(d, f)) for f in "
                 "('py.typed', '_attnkit.pyi', 'v1/session_pb2.pyi')))"],
                env=env, cwd=tmp, capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stderr)
            version, total, location, typed = check.stdout.split()
            self.assertRegex(version, r"^\d+\.\d+\.\d+$")
            self.assertEqual(float(total), 24.0)
            self.assertTrue(location.startswith(venv), location)
            self.assertEqual(typed, "True", "py.typed and the .pyi stubs are not installed")


if __name__ == "__main__":
    unittest.main(verbosity=2)

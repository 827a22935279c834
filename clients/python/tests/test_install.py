import pathlib
import subprocess
import sys
import tempfile

PACKAGE = pathlib.Path(__file__).resolve().parents[1]


def test_pip_installs_the_package_with_its_type_marker():
    target = tempfile.mkdtemp(prefix="baton-install-")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--target", target, str(PACKAGE)],
        check=True,
    )
    installed = pathlib.Path(target) / "baton"
    assert (installed / "py.typed").exists()
    probe = subprocess.run(
        [sys.executable, "-c", "import baton; print(baton.Worker.__name__)"],
        cwd=target, capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "Worker"

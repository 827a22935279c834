"""A new Swift package written from the README's "Depending on Baton" builds against this
checkout with only the client's dependencies, and catches BatonError with nothing but
`import BatonClient`."""
import os
import pathlib
import re
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# The server's package graph: none of it is resolved for a client-only dependent.
SERVER_ONLY = {"GRDB.swift", "swift-prometheus", "swift-metrics", "TOMLKit", "swift-argument-parser", "swift-nio-extras", "swift-crypto"}


def test_a_package_written_from_the_readme_builds_with_the_client_alone(batond, tmp_path):
    section = re.search(r"### Depending on Baton\n(.*?)\n### ", README, re.S).group(1)
    manifest, main = re.findall(r"```swift\n(.*?)```", section, re.S)
    # The README's `../baton`: this checkout as it is, without its build products.
    shutil.copytree(ROOT, tmp_path / "baton", ignore=shutil.ignore_patterns(".build*", ".git", "node_modules", "__pycache__"))
    package = tmp_path / "welcome"
    (package / "Sources" / "welcome").mkdir(parents=True)
    (package / "Package.swift").write_text(manifest)
    (package / "Sources" / "welcome" / "main.swift").write_text(main)
    try:
        built = subprocess.run(["swift", "build", "--package-path", str(package)], capture_output=True, text=True, timeout=1800)
        assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
        resolved = {path.name for path in (package / ".build" / "checkouts").iterdir()}
        assert not resolved & SERVER_ONLY, f"resolved the server's dependencies too: {sorted(resolved)}"

        def welcome(*arguments):
            run = subprocess.run(
                [str(package / ".build" / "debug" / "welcome"), *arguments], capture_output=True, text=True, timeout=60,
                env={**os.environ, "BATON_SOCKET": batond.socket_path},
            )
            assert run.returncode == 0, run.stderr
            return run.stdout.strip()

        assert re.fullmatch(r"job \d+ is queued", welcome()), "enqueued"
        assert welcome().endswith("is queued, already waiting"), "the unique key found the first"
        refused = welcome("q" * 300)
        assert refused.startswith("batond refused it: invalid_argument: `queue`"), refused
    finally:
        shutil.rmtree(package / ".build", ignore_errors=True)

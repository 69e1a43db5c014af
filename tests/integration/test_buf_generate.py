"""`buf.gen.yaml`, the template teams use to generate stubs in their language,
run through buf as a team would run it. The plugins other languages need are
not on this machine, so they are stand-ins that read buf's request and answer
with nothing (claiming proto3 `optional` support, as the real ones do);
protoc's Python generators (grpc_tools' protoc) generate for real. Only the
Java entry, which needs a full protoc, is left out."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import BIN, ROOT

TEMPLATE = ROOT / "buf.gen.yaml"
#: An empty CodeGeneratorResponse with supported_features = FEATURE_PROTO3_OPTIONAL.
STAND_IN = "#!/bin/sh\ncat >/dev/null\nprintf '\\020\\001'\n"
#: Builtins grpc_tools' protoc lacks.
MISSING_BUILTINS = ("java",)


def local_plugins(text: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if "- local:" in line]


def without_builtins(text: str, names: tuple[str, ...]) -> str:
    lines, out, skip = text.splitlines(keepends=True), [], False
    for line in lines:
        if line.strip().startswith("- "):
            skip = any(line.strip() == f"- protoc_builtin: {n}" for n in names)
        if not skip:
            out.append(line)
    return "".join(out)


def test_buf_builds_the_module():
    result = subprocess.run(
        [str(BIN / "buf"), "build", "-o", "/dev/null"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_the_generation_template_runs_every_plugin_and_generates_python(tmp_path: Path):
    text = TEMPLATE.read_text()
    plugins = local_plugins(text)
    assert {"protoc-gen-go", "protoc-gen-go-grpc", "protoc-gen-es", "protoc-gen-grpc-java"} <= set(
        plugins
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    called = tmp_path / "called"
    for name in plugins:
        plugin = bin_dir / name
        plugin.write_text(
            STAND_IN.replace("cat >/dev/null", f"cat >/dev/null; echo {name} >> {called}")
        )
        plugin.chmod(0o755)
    protoc = bin_dir / "protoc"
    protoc.write_text(f'#!/bin/sh\nexec "{BIN / "python"}" -m grpc_tools.protoc "$@"\n')
    protoc.chmod(0o755)
    template = tmp_path / "buf.gen.yaml"
    template.write_text(without_builtins(text, MISSING_BUILTINS))
    out = tmp_path / "out"
    result = subprocess.run(
        [str(BIN / "buf"), "generate", "--template", str(template), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr, result.stderr
    assert sorted(set(called.read_text().split())) == sorted(set(plugins))
    generated = out / "gen" / "python" / "dbgateway" / "v1"
    for name in ("database_service", "admin_service", "value"):
        assert (generated / f"{name}_pb2.py").exists()
        assert (generated / f"{name}_pb2.pyi").exists()
    # What was generated is the API itself.
    code = (generated / "database_service_pb2.py").read_text()
    assert "DatabaseService" in code

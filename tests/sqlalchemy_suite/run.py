"""Runs SQLAlchemy's compliance suite against one URL in a pytest process of
its own and reads its JUnit report."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass
class SuiteResult:
    """Counts and the ids of the failing tests of one run."""

    url: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    returncode: int = 0
    output: str = ""

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped


def _test_id(case: ET.Element) -> str:
    """``Class::test[param]`` without the per-backend suffix SQLAlchemy adds
    to class names (``_sqlite+dbgateway_3_40_1``), so that runs against
    different drivers name the same test the same way."""
    cls = case.attrib.get("classname", "").rsplit(".", 1)[-1]
    for marker in ("_postgresql", "_mysql", "_mariadb", "_sqlite"):
        if marker in cls:
            cls = cls[: cls.index(marker)]
    return f"{cls}::{case.attrib.get('name', '')}"


def read_report(url: str, report: Path) -> SuiteResult:
    result = SuiteResult(url)
    root = ET.parse(report).getroot()
    for suite in [root] if root.tag == "testsuite" else list(root):
        result.seconds += float(suite.attrib.get("time", 0))
        for case in suite.iter("testcase"):
            outcome = [child for child in case if child.tag in ("failure", "error", "skipped")]
            if not outcome:
                result.passed += 1
            elif outcome[0].tag == "skipped":
                result.skipped += 1
            else:
                result.failed += 1
                message = outcome[0].attrib.get("message") or ""
                result.failures[_test_id(case)] = message.splitlines()[0][:200] if message else ""
    return result


def run_suite(
    url: str, report: Path, *, timeout: float = 1800, extra: tuple[str, ...] = ()
) -> SuiteResult:
    """Runs the whole suite against ``url``; ``report`` receives the JUnit XML."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.sqlalchemy_suite.plugin",
        "-p",
        "no:warnings",
        "--rootdir",
        str(HERE),
        "-c",
        str(HERE / "setup.cfg"),
        "--dburi",
        url,
        f"--junitxml={report}",
        *extra,
        str(HERE / "suite_sqlalchemy.py"),
    ]
    done = subprocess.run(
        cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if not report.exists():
        raise RuntimeError(f"the suite did not run for {url}:\n{done.stdout}\n{done.stderr}")
    result = read_report(url, report)
    result.returncode = done.returncode
    result.output = done.stdout[-5000:] + done.stderr[-5000:]
    return result

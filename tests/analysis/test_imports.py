"""``flashsale.analysis`` stays out of the web layer (STYLE: imports flow one way)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import flashsale.analysis
web = sorted(m for m in sys.modules if m.split(".")[0] == "fastapi" or m == "flashsale.api"
             or m.startswith("flashsale.api."))
print(web)
assert not web, web
"""


def test_analysis_imports_without_fastapi() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

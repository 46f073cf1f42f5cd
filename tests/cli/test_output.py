"""Tables stay whole when the output is piped (Rich cuts them at 80 columns otherwise)."""

from __future__ import annotations

import subprocess
import sys


def test_a_piped_table_is_not_cut_at_80_columns():
    proc = subprocess.run([sys.executable, "-m", "persea.cli", "teachers"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GptOssForCausalLM" in proc.stdout and "Unigram (SentencePiece-style)" in proc.stdout
    assert "…" not in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) > 80

"""Token authentication as the README and cluster/README.md set it up. The refusals themselves
(no token: 401 Unauthorized, another token: 403 Forbidden) are checked on the cluster of
``test_job_submit.py``, which runs the smoke experiment with the token; this checks the README's
first step: ``ray get-auth-token --generate`` makes ``~/.ray/auth_token`` once, then reuses it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from _cli_cluster import RAY_CLI

pytestmark = [pytest.mark.ray]

AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def test_the_readme_makes_a_token_once_and_reuses_it(tmp_path):
    real_token = Path.home() / ".ray" / "auth_token"
    real_before = real_token.read_bytes() if real_token.exists() else None
    home = tmp_path / "home"
    home.mkdir()
    # a fresh shell whose home is `home` (the token never touches the user's), README's
    # `export RAY_AUTH_MODE=token`
    shell = {**{k: v for k, v in os.environ.items() if k not in AUTH_VARS},
             "HOME": str(home), "RAY_AUTH_MODE": "token"}
    made = []
    for _ in range(2):
        gen = subprocess.run([RAY_CLI, "get-auth-token", "--generate"], capture_output=True,
                             text=True, timeout=120, env=shell)
        assert gen.returncode == 0, gen.stderr[-2000:]
        token = (home / ".ray" / "auth_token").read_text().strip()
        assert len(token) >= 32 and gen.stdout.strip() == token
        made.append(token)
    assert made[0] == made[1]  # the second call reuses the first token
    assert (real_token.read_bytes() if real_token.exists() else None) == real_before

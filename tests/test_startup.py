"""What every process pays at start-up: Django's set-up, the apps' ready() and the URLs (which
Django's checks import in every worker and command) load none of the heavy libraries."""

import json
import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("scipy", "choix", "matplotlib", "statsmodels", "torch", "transformers", "peft", "trl")

PROBE = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
import django
django.setup()
from django.core.checks import run_checks
run_checks()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})))
"""


def test_django_start_up_and_its_checks_import_no_heavy_library():
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"imported at start-up: {sorted({m.split('.')[0] for m in loaded})}"

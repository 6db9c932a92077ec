"""The public names that the README uses resolve after a bare ``import trp``."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_name_in_all_exists():
    import trp

    missing = [name for name in trp.__all__ if not hasattr(trp, name)]
    assert not missing


def test_readme_dotted_names_resolve_after_import_trp():
    """Run in a fresh interpreter so that submodules imported by other tests cannot mask a gap."""
    names = sorted(set(re.findall(r"`(trp(?:\.[A-Za-z_]\w*)+)", README.read_text())))
    assert "trp.data.load_dataset" in names  # the pattern does find the README's API names
    probe = "import functools, trp\nfor name in %r:\n    functools.reduce(getattr, name.split('.')[1:], trp)\n" % names
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr

"""Replace one generated section of benchmarks/RESULTS.md, leaving the rest as it is."""

from __future__ import annotations

from pathlib import Path

RESULTS_MD = Path(__file__).parent / "RESULTS.md"


def replace_section(name: str, section: str, path: Path = RESULTS_MD) -> None:
    """Write ``section`` between ``<!-- NAME:BEGIN -->`` and ``<!-- NAME:END -->`` in ``path``
    (appended, with its markers, when they are not there yet)."""
    begin, end = f"<!-- {name}:BEGIN -->", f"<!-- {name}:END -->"
    block = f"{begin}\n{section.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Results\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the checkout; tests that need it skip cleanly where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present on this machine")
    return SHARED


@pytest.fixture
def readme_block():
    """`readme_block("Lightning")`: the first python block under the heading `### Lightning`
    in the README or the docs/ page it moved to, so a test runs the documented code as written."""
    def block(title: str) -> str:
        pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        text = next(t for t in (p.read_text(encoding="utf-8") for p in pages)
                    if f"\n### {title}\n" in t)
        section = text.split(f"\n### {title}\n", 1)[1]
        return section.split("```python\n", 1)[1].split("\n```", 1)[0]
    return block

"""lbw_sim installed from outside the checkout: a plain (non-editable) `pip install` into a
fresh venv carries every file the package reads at run time (the shipped specs, the default among
them, the prose text, any spec folder), and works from a directory that is not the checkout.

Offline: `--no-index --no-deps --no-build-isolation`, with the venv seeing this Python's
site-packages for numpy, pandas, pip, setuptools and the rest. The checkout is copied first, so
the build leaves no `build/` or `*.egg-info` in the working tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".ruff_cache", ".hypothesis", "screenshots")

CHECK = textwrap.dedent("""
    import sys, sysconfig
    from pathlib import Path
    import lbw_sim
    from lbw_sim.guard.spec import NAMED_SPECS, GuardSpec
    from lbw_sim.sim import prose

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    pkg = Path(lbw_sim.__file__).resolve().parent
    checkout = Path(sys.argv[1]).resolve()
    assert pkg.parent == site, (pkg, site)
    assert checkout not in pkg.parents, pkg
    # Package data is in the install, not made on the fly (prose_path() writes a missing file).
    for rel in [*(f"guard/specs/{f}" for f in NAMED_SPECS.values()), "data/prose.txt"]:
        assert (pkg / rel).is_file(), rel
    print("specs", sorted(p.name for p in (pkg / "guard").glob("specs/*.yaml")))
    spec = GuardSpec.default()
    assert spec.name and spec.regimes and spec.transitions
    text = prose.prose_path()
    assert text.resolve().parent == pkg / "data" and len(text.read_text()) > 10_000
    print("ok", spec.name, spec.hash)
""")


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout}\n{out.stderr}"
    return out


def test_plain_install_works_from_outside_the_checkout(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    # A spec folder the package may grow (lbw_sim/guard/specs/): package-data must carry it.
    probe = src / "lbw_sim" / "guard" / "specs" / "zz_install_probe.yaml"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text((ROOT / "lbw_sim" / "guard" / "specs" / "lbw-adaptive.yaml").read_text())
    venv = tmp_path / "venv"
    # No pip of its own: ensurepip's setuptools would shadow the one the build needs; the
    # system pip installs into the venv it runs under (sys.prefix).
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        tmp_path)
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
         "--no-build-isolation", str(src)], tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Every *.yaml the package holds in the checkout is in the install too.
    shipped = {p.relative_to(src / "lbw_sim").as_posix()
               for p in (src / "lbw_sim").rglob("*.yaml")}
    site = run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               elsewhere).stdout.strip()
    installed = {p.relative_to(Path(site) / "lbw_sim").as_posix()
                 for p in (Path(site) / "lbw_sim").rglob("*.yaml")}
    assert "guard/specs/zz_install_probe.yaml" in shipped
    assert shipped <= installed, f"not installed: {sorted(shipped - installed)}"
    out = run([str(py), "-c", CHECK, str(ROOT)], elsewhere)
    assert out.stdout.splitlines()[-1].startswith("ok lbw-")
    spec = run([str(py), "-m", "lbw_sim", "spec", "--default"], elsewhere)
    assert "regimes:" in spec.stdout and "transitions:" in spec.stdout

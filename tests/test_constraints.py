"""constraints.txt, the versions `make test` last passed with, agrees with pyproject and keeps CUDA out.

A dependency added to pyproject.toml without `make lock` would be installed unpinned, and a raised lower
bound that the pins no longer meet would make `pip install -c constraints.txt` fail on a fresh clone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pyproject installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
#: Installed by the Makefile, not pinned here: torch's build depends on the machine (CPU or CUDA).
UNPINNED = {"torch"}


def _pins() -> dict[str, Requirement]:
    pins: dict[str, Requirement] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            req = Requirement(line)
            assert canonicalize_name(req.name) not in pins, f"{req.name} is pinned twice"
            pins[canonicalize_name(req.name)] = req
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = _pins()
    problems = []
    for req in _declared():
        name = canonicalize_name(req.name)
        if name in UNPINNED or (req.marker and not req.marker.evaluate()):
            continue
        pin = pins.get(name)
        if pin is None:
            problems.append(f"{req.name} is not in constraints.txt")
            continue
        (spec,) = pin.specifier  # exactly one ==
        assert spec.operator == "==", f"{pin} is not an exact pin"
        if not req.specifier.contains(spec.version, prereleases=True):
            problems.append(f"{req.name}=={spec.version} is outside pyproject's {req.specifier}")
    assert not problems, "run `make lock` (then `make test`): " + "; ".join(problems)


def test_pins_apply_to_the_python_they_were_made_with_and_leave_torch_and_cuda_alone():
    pins = _pins()
    assert len(pins) > 50  # the whole resolved set, not only the direct dependencies
    for name, pin in pins.items():
        assert not name.startswith(("torch", "nvidia-", "triton")), f"{pin}: the Makefile picks torch's build"
        assert pin.marker is not None and "python_version" in str(pin.marker), f"{pin} has no python_version marker"
    made_for = {str(p.marker) for p in pins.values()}
    assert len(made_for) == 1, f"pins made on several Pythons: {made_for}"

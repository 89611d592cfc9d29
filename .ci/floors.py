"""Exit 0 if every installed package pinned in constraints/floors.txt is at that version, else 1 (listing them)."""

from importlib import metadata
from pathlib import Path

differ = []
for line in (Path(__file__).parents[1] / "constraints" / "floors.txt").read_text().splitlines():
    if "==" in line and not line.lstrip().startswith("#"):
        name, pinned = (x.strip() for x in line.split("=="))
        try:
            found = metadata.version(name).split("+")[0]
        except metadata.PackageNotFoundError:  # an extra the test install does not pull (serve's uvloop)
            continue
        if found != pinned:
            differ.append(f"{name} {found} (floor {pinned})")
print("newer than the floors: " + ", ".join(differ) if differ else "all at the floors")
raise SystemExit(1 if differ else 0)

"""Exit 0 if every package pinned in constraints/floors.txt is installed at that version, else 1 (and list them)."""

from importlib import metadata
from pathlib import Path

differ = []
for line in (Path(__file__).parents[1] / "constraints" / "floors.txt").read_text().splitlines():
    if "==" in line and not line.lstrip().startswith("#"):
        name, pinned = (x.strip() for x in line.split("=="))
        found = metadata.version(name).split("+")[0]
        if found != pinned:
            differ.append(f"{name} {found} (floor {pinned})")
print("newer than the floors: " + ", ".join(differ) if differ else "all at the floors")
raise SystemExit(1 if differ else 0)

"""A zip of the installed package for ``spark-submit --py-files`` (executors import it from there)."""
from __future__ import annotations

import zipfile
from pathlib import Path


def write_bundle(out: str) -> str:
    """Zip ``distunlearn`` (with ``distunlearn.udfs``) as importable from the archive root."""
    import distunlearn
    import distunlearn.udfs

    roots = [(Path(distunlearn.__file__).parent, "distunlearn"), (Path(distunlearn.udfs.__file__).parent, "distunlearn/udfs")]
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, prefix in roots:
            for path in sorted(root.rglob("*.py")):
                zf.write(path, f"{prefix}/{path.relative_to(root).as_posix()}")
    return str(target)

"""The committed toy figures, redrawn from the committed results without training anything
(`python -m toy_tasks figures`): FIGURES names the results file each figure is drawn from and the
function that draws it; `headline.png` (the README's figure) comes from the demo's run over seeds."""
from __future__ import annotations

import json
from pathlib import Path

from imdm_lab import durable
from toy_tasks.plot import plot_headline, plot_results

# figure -> (results file it is drawn from, the function that draws it)
FIGURES = {
    "headline.png": ("demo-seeds.json", plot_headline),
    "demo.png": ("demo.json", plot_results),
    "demo-seeds.png": ("demo-seeds.json", plot_results),
    "readers.png": ("readers.json", plot_results),
    "paper-synthetic.png": ("paper-synthetic.json", plot_results),
    "redi-epochs.png": ("redi-epochs.json", plot_results),
}


def redraw(results: Path, out: Path) -> list[str]:
    """Draw every figure of FIGURES whose results file is in `results` into `out` (each written whole under
    its staging name, then moved into place); returns the lines to print, a missing file named."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, (source, draw) in FIGURES.items():
        if not (results / source).is_file():
            lines.append(f"skipped {name}: no {results / source}")
            continue
        staged = durable.staging(out / name).with_suffix(".png")  # the suffix names the format
        try:
            draw(json.loads((results / source).read_text()), str(staged))
            durable.publish_file(staged, out / name)
        finally:
            staged.unlink(missing_ok=True)
        lines.append(f"wrote {out / name} from {results / source}")
    return lines

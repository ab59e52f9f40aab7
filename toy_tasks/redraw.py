"""The committed toy figures, redrawn from the committed results without training anything
(`python -m toy_tasks figures`): FIGURES names the results file each figure is drawn from and the
function that draws it; `headline.png` (the README's figure) comes from the demo's run over seeds."""
from __future__ import annotations

import json
from pathlib import Path

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
    """Draw every figure of FIGURES whose results file is in `results` into `out` (each written atomically,
    imdm_lab.durable.write_figure); returns the lines to print, a missing file named."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, (source, draw) in FIGURES.items():
        if not (results / source).is_file():
            lines.append(f"skipped {name}: no {results / source}")
            continue
        draw(json.loads((results / source).read_text()), str(out / name))  # written atomically by the plot
        lines.append(f"wrote {out / name} from {results / source}")
    return lines

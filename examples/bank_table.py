"""Print the issue-10 comparison table from the eval JSON files that bank_experiment.sh wrote.

    python examples/bank_table.py OUT_DIR

PSNR and SSIM of the mask region carry their margin over the frozen-mouth baseline in brackets.
"""

import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
clips = ["mimictalk_German_20s", "dfrf_cnn2_25fps", "sadtalker_WDA_KatieHill_000"]
rows = [("frozen-mouth baseline", "baseline"), ("fia 128 px, (a) tracked", "fia_tracked"), ("fia 128 px, (b) audio", "fia_audio"),
        ("bank, (a) tracked", "bank_tracked"), ("bank, (b) audio", "bank_audio"),
        ("bank+fia, (a) tracked", "bank+fia_tracked"), ("bank+fia, (b) audio", "bank+fia_audio")]
keys = [("psnr_mask", "PSNR mask", 2), ("ssim_mask", "SSIM mask", 3), ("m_lmd", "M-LMD", 2), ("mouth_r_source", "mouth r", 2),
        ("sharpness_ratio", "sharpness", 2), ("teeth_ratio", "teeth", 2), ("flicker_ratio", "flicker", 2)]
for clip in clips:
    print(f"\n### {clip}\n")
    print("| renderer | " + " | ".join(k[1] for k in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    base = json.loads((out / f"{clip}_baseline.json").read_text())["metrics"]
    for label, suffix in rows:
        path = out / f"{clip}_{suffix}.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())["metrics"]
        cells = []
        for key, _, digits in keys:
            v = metrics.get(key, {}).get("value")
            over = f" ({v - base[key]['value']:+.{digits}f})" if key in ("psnr_mask", "ssim_mask") and suffix != "baseline" else ""
            cells.append("-" if v is None else f"{v:.{digits}f}{over}")
        print(f"| {label} | " + " | ".join(cells) + " |")

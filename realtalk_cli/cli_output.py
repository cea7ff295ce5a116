"""What the command line prints: the summary tables of preprocess and dub (on stderr, via rich)."""

from __future__ import annotations

from realtalk_cli.errors import RealtalkError


def preprocess(inputs, out, config, workers: int = 1, shard: tuple[int, int] = (0, 1), retry_failed: bool = False,
                device: str = "cpu"):
    """The `realtalk preprocess` command: progress bars, then a summary table on stderr."""
    from rich.table import Table

    from realtalk_cli.errors import UsageError
    from realtalk_cli.pipelines.preprocess import preprocess_dataset
    from realtalk_cli.progress import console, progress

    if workers < 1:
        raise UsageError("--workers must be >= 1")
    with progress() as p:
        result = preprocess_dataset(inputs, out, config, workers, shard, retry_failed, p, device)
    errors = {}
    for c in result.clips:
        errors.setdefault(c["source_name"], []).append((c["fit_error"] or 0.0, c["n_valid"]))
    table = Table(title=f"realtalk preprocess -> {out}")
    for col in ("video", "clips", "frames", "kept", "dropped", "no face", "fit px", "sec", "fps"):
        table.add_column(col, justify="left" if col == "video" else "right")
    for r in result.sources:
        if r["status"] != "ok":
            table.add_row(f"[red]{r['name']}[/red]", *["-"] * 8)
            continue
        e = errors.get(r["name"], [])
        w = sum(n for _, n in e)
        err = f"{sum(x * n for x, n in e) / w:.2f}" if w else "-"
        table.add_row(r["name"], str(len(r["clips"])), str(r["frames"]), str(r["kept"]), str(r["dropped"]),
                      str(r["missing"]), err, f"{r['seconds']:.1f}", f"{r['frames'] / max(r['seconds'], 1e-9):.1f}")
    console.print(table)
    for r in result.sources:
        if r["status"] != "ok":
            console.print(f"[red]failed[/red] {r['source']}: {r['reason']}", highlight=False, soft_wrap=True)
    n_ok = sum(r["status"] == "ok" for r in result.sources)
    if result.complete and n_ok == 0:  # an empty dataset is no success; the failure records stay, for --retry-failed
        bad = next(r for r in result.sources if r["status"] != "ok")
        more = f" (and {len(result.sources) - 1} more videos failed)" if len(result.sources) > 1 else ""
        raise RealtalkError(f"{bad['reason']}; no video could be used{more}", bad["source"])
    if result.complete:
        err = f"{result.fit_error:.2f} px" if result.fit_error is not None else "-"
        console.print(f"{len(result.clips)} clips from {n_ok} videos ({len(result.sources) - n_ok} failed); "
                      f"mean fit error {err}; {result.seconds:.1f} s")
    else:
        console.print(f"shard {shard[0]}/{shard[1]} done ({n_ok} videos ok); run again without --shard once all "
                      "shards are finished to build the face model, fit coefficients and write the manifest")
    return result


def dub_summary(result) -> None:
    from rich.table import Table

    from realtalk_cli.progress import console

    w, h = result.width, result.height
    size = f"{w}x{h}" + (f" (encoded {w + w % 2}x{h + h % 2}: H.264 4:2:0 needs even sides)" if w % 2 or h % 2 else "")
    t = Table(title=f"{result.output}: {result.frames} frames, {size} @ {result.fps:g} fps, "
                    f"{result.faces_missing} without a face")
    for col in ("stage", "seconds", "frames/s"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for stage, sec in result.stages.items():
        t.add_row(stage, f"{sec:.2f}", f"{result.frames / sec:.1f}" if sec > 0 else "-")
    t.add_row("total (wall; stages overlap)", f"{result.seconds:.2f}", f"{result.frames / result.seconds:.1f}")
    if result.first_frame is not None:
        t.caption = f"first frame after {result.first_frame:.2f} s"
    console.print(t)

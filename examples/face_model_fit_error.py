"""How well the landmark face model explains tracked faces it was not built from (crop pixels).

    python examples/face_model_fit_error.py runs/data_all

Prints, per clip: the in-sample fit error stored in the dataset; the error on the last 20% of
frames when the model is learned from the first 80% of every clip (unseen expressions); the error
on a clip whose person was left out of the model (unseen identity); and, as a floor to compare
with, the error of the mean shape with only the head pose fitted.
"""

import argparse

from realtalk_cli.data.dataset import Dataset
from realtalk_cli.face.fit import build_landmark_model, fit_landmarks


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--n-exp", type=int, nargs="+", default=[16, 32, 64])
    args = ap.parse_args()
    ds = Dataset.open(args.dataset)
    crop = ds.face_model.crop_size
    lms = {c.name: c.landmarks3d()[c.valid()] for c in ds.clips()}
    rows = {n: {"in-sample": float(c.coeffs()["fit_error"][c.valid()].mean())} for n, c in zip(lms, ds.clips())}
    cut = {n: int(0.8 * len(v)) for n, v in lms.items()}
    for n_exp in args.n_exp:
        model = build_landmark_model([v[:cut[n]] for n, v in lms.items()], crop, n_exp=n_exp)
        for n, v in lms.items():
            rows[n][f"last 20%, n_exp {n_exp}"] = fit_landmarks(model, v[cut[n]:]).mean_error()
    if len(lms) > 1:
        for n in lms:
            model = build_landmark_model([v for k, v in lms.items() if k != n], crop, n_exp=max(args.n_exp))
            rows[n]["unseen person"] = fit_landmarks(model, lms[n]).mean_error()
    floor = build_landmark_model(list(lms.values()), crop, n_id=0, n_exp=0)
    for n, v in lms.items():
        rows[n]["mean shape + pose"] = fit_landmarks(floor, v).mean_error()
    cols = list(next(iter(rows.values())))
    print("clip".ljust(32) + "".join(c.rjust(20) for c in cols))
    for n, r in rows.items():
        print(n[:31].ljust(32) + "".join(f"{r[c]:20.3f}" for c in cols))


if __name__ == "__main__":
    main()

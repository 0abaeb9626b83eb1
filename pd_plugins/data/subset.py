"""Subsets chosen by other tools: CSV or JSON files of source indices."""
from __future__ import annotations

import csv
import json

from pd_plugins.errors import DataError
from pd_plugins.paths import expect_file


def read_indices(path) -> list[int]:
    """Source indices from a ``.json`` (list, or object with ``indices``/``source_index``) or ``.csv``
    (a column named ``source_index`` or ``index``, else the first column)."""
    path = expect_file(path, "subset file")
    try:
        if path.suffix.lower() == ".json":
            obj = json.loads(path.read_text())
            if isinstance(obj, dict):
                obj = obj.get("source_index", obj.get("indices"))
            if not isinstance(obj, list):
                raise DataError(f"subset file {path}: expected a list of indices or an object with 'source_index'")
            bad = [v for v in obj if isinstance(v, bool) or not isinstance(v, int)]
            if bad:
                raise DataError(f"subset file {path}: indices must be integers, got {bad[0]!r}")
            return list(obj)
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            raise DataError(f"subset file {path} is empty")
        header = [h.strip().lower() for h in rows[0]]
        col = next((header.index(n) for n in ("source_index", "index") if n in header), None)
        body = rows[1:] if col is not None or not header[0].strip().lstrip("-").isdigit() else rows
        col = col or 0
        return [int(r[col].strip()) for r in body if any(c.strip() for c in r)]
    except DataError:
        raise
    except IndexError:
        raise DataError(f"subset file {path} is malformed: a row has too few columns") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise DataError(f"subset file {path} is malformed: {exc}") from None


def read_subset(path, train):
    """A PruneResult selecting the samples of ``train`` whose *source* index is listed in ``path``."""
    import torch

    from pd_plugins.types import PruneResult
    from pd_plugins.io import file_sha256

    wanted = read_indices(path)
    if not wanted:
        raise DataError(f"subset file {path} lists no indices")
    if len(set(wanted)) != len(wanted):
        from collections import Counter

        dup = next(w for w, n in Counter(wanted).items() if n > 1)
        raise DataError(f"subset file {path} lists duplicated indices (e.g. {dup})")
    lookup = {int(s): i for i, s in enumerate(train.index.tolist())}
    missing = [w for w in wanted if w not in lookup]
    if missing:
        raise DataError(f"subset file {path}: {len(missing)} indices are outside the dataset (e.g. {missing[0]})")
    positions = torch.tensor(sorted(lookup[w] for w in wanted), dtype=torch.long)
    return PruneResult(keep=positions, scores=None, pruner="subset",
                       options={"file": str(path), "sha256": file_sha256(path)}, meta={})

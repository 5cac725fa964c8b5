"""Planning a Compose: which neighbouring transforms run as one stage, and the image
size after each."""

_PHASE = {"affine": 0, "flip": 0, "lens": 1, "elastic": 2}


def plan(transforms):
    """Split a transform list into stages: ("copy", [(index, t), ...]) runs of flips
    and at most one crop, and ("warp", [...]) runs of affine maps (flips included),
    then at most one lens, then at most one elastic field, all with one border."""
    stages = []
    for i, t in enumerate(transforms):
        last = stages[-1] if stages else None
        if last is not None and last[0] == "warp" and _joins_warp(last, t):
            last[1].append((i, t))
        elif last is not None and last[0] == "copy" and (
            t.role == "flip" or (t.role == "crop" and not any(u.role == "crop" for _, u in last[1]))
        ):
            last[1].append((i, t))
        elif t.role in ("flip", "crop"):
            stages.append(("copy", [(i, t)]))
        else:
            stages.append(("warp", [(i, t)]))
    return stages


def _joins_warp(stage, t):
    members = [u for _, u in stage[1]]
    phase = max(_PHASE[u.role] for u in members)
    if t.role == "crop":
        return False
    borders = {u.border for u in members if u.border is not None}
    if t.border is not None and borders and t.border not in borders:
        return False
    new = _PHASE[t.role]
    return (new == 0 and phase == 0) or new > phase


def stage_border(members):
    """(mode, fill) of a stage: its members' (one at most, by the plan)."""
    for _, t in members:
        if t.border is not None:
            return t.border
    return ("edge", 0.0)  # flips and resized crops only: they read inside the image


def output_size(transforms, h, w):
    """(h, w) of the images after the transforms, from (h, w) before (None where not
    known: then only sizes fixed by a transform, a crop's or a resized crop's, are); a
    crop larger than its padded input, when that input's size is known, raises
    ValueError."""
    for t in transforms:
        if t.role == "crop" and h is not None and w is not None:
            t._check_fits(h, w)
        if t.fixes_size:
            h, w = t.size
    return h, w

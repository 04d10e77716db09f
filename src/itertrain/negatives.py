"""Negative pairs made by re-pairing the positives' target sites with other miRNAs.

Each positive's target site is re-paired ``ratio`` times, so target sites are
exactly as frequent among the negatives as among the positives (per site:
``ratio`` times its count). Two distributions of the partner miRNAs:

``frequency`` (the default)
    miRNAs as frequent among the negatives as among the positives, so that the
    identity of the miRNA alone carries no label signal.
``uniform``
    Every distinct miRNA of the positives equally frequent.

No negative is a known positive pair (the positives themselves, plus any
``known_positives``) and no negative pair occurs twice. Output is reproducible
from ``seed``.

How the shares are kept exactly: drawing each slot's miRNA independently and
redrawing collisions would bias the shares (a slot may not take its own
miRNA, nor one its site already has, so frequent miRNAs come out rarer, by
about their squared share, and much more at high ratios). Instead the
negatives' miRNAs are fixed first as a multiset with the wanted shares
(each positive's miRNA ``ratio`` times; or every miRNA equally often), dealt
to the slots in random order, and the invalid slots (known positive or
repeated pair) then swap miRNAs with random valid slots, in vectorized rounds,
while both new pairs are valid. Swaps keep the multiset, so the shares are
exact. Only when they are impossible (a miRNA would need more slots than there
are sites free for it, e.g. 6 % of the positives at ratio 20) do the slots
left over get any miRNA their site is free for, drawn by the current shares;
the shares then move by no more than that shortfall.

Sequences are compared after upper-casing and reading ``U`` as ``T`` (as the
encoder does), so ``ACGU`` and ``acgt`` are the same miRNA; the output keeps
the spelling of the first occurrence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from itertrain.errors import UserError
from itertrain.io import parse_labels, resolve_columns

__all__ = ["MODES", "repair_negatives", "make_negatives_table"]

MODES = ("frequency", "uniform")

_SWAP_ROUNDS = 200
_STALLED_ROUNDS = 8  # rounds without 1 % fewer invalid slots before giving up on exact shares
_PARTNERS = 8  # candidate swap partners per invalid slot and round
_SHOWN_TARGET = 20  # characters of a target site quoted in messages


def _normalized(seqs: Sequence[str] | np.ndarray | pd.Series) -> pd.Series:
    """Sequences as identity keys: upper case, ``U`` read as ``T``."""
    return pd.Series(np.asarray(seqs, dtype=object)).astype(str).str.upper().str.replace("U", "T", regex=False)


def _factorize(seqs: Sequence[str] | np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Integer ids, the original spelling of each id, and the identity key of each id."""
    original = np.asarray(seqs, dtype=object)
    ids, keys = pd.factorize(_normalized(original))
    _, first = np.unique(ids, return_index=True)
    return ids.astype(np.int64), original[first], pd.Index(keys)


def _pair_keys(target_ids: np.ndarray, mirna_ids: np.ndarray, n_mirna: int) -> np.ndarray:
    return target_ids.astype(np.int64) * n_mirna + mirna_ids


def _known_keys(known_positives, target_keys: pd.Index, mirna_keys: pd.Index) -> np.ndarray:
    """Keys of the extra known positive pairs whose site and miRNA both occur among the positives.

    Pairs with an unseen site or miRNA can never be drawn, so they are dropped.
    """
    if known_positives is None:
        return np.empty(0, np.int64)
    known_t, known_m = known_positives
    if len(known_t) != len(known_m):
        raise UserError(f"known_positives: {len(known_t)} target sites but {len(known_m)} miRNAs; "
                        "give two sequences of the same length")
    t = target_keys.get_indexer(_normalized(known_t))
    m = mirna_keys.get_indexer(_normalized(known_m))
    seen = (t >= 0) & (m >= 0)
    return _pair_keys(t[seen], m[seen], len(mirna_keys))


def _check_feasible(target_ids: np.ndarray, known: np.ndarray, n_mirna: int, ratio: int,
                    target_names: np.ndarray) -> None:
    """Raise UserError when a target site has fewer free miRNAs than negatives to make for it."""
    n_targets = len(target_names)
    positives = np.bincount(target_ids, minlength=n_targets)
    free = n_mirna - np.bincount(known // n_mirna, minlength=n_targets)
    short = np.flatnonzero(ratio * positives > free)
    if short.size == 0:
        return
    t = short[np.argmax(ratio * positives[short] - free[short])]
    site = str(target_names[t])
    shown = site if len(site) <= _SHOWN_TARGET else site[:_SHOWN_TARGET] + "..."
    most = int(np.min(free[short] // positives[short]))
    fix = f"lower the ratio to {most} or add miRNAs" if most >= 1 else "add miRNAs or remove such sites"
    raise UserError(
        f"cannot make {ratio} negative(s) per positive: {short.size} target site(s) have too few other "
        f"miRNAs, e.g. {shown!r} ({positives[t]} positive(s)) needs {ratio * positives[t]} distinct miRNAs "
        f"but only {free[t]} of the {n_mirna} are not known positives with it; {fix}"
    )


def _balanced_pool(mirna_ids: np.ndarray, n_mirna: int, n_slots: int, ratio: int, mode: str,
                   rng: np.random.Generator) -> np.ndarray:
    """The multiset of miRNA ids the negatives will hold, in random order.

    ``frequency``: every positive's miRNA ``ratio`` times, so shares equal the
    positives' exactly. ``uniform``: every miRNA ``n_slots // n_mirna`` times,
    the remainder going to randomly chosen miRNAs (one extra each).
    """
    if mode == "frequency":
        pool = np.repeat(mirna_ids, ratio)
    else:
        counts = np.full(n_mirna, n_slots // n_mirna)
        counts[rng.choice(n_mirna, size=n_slots % n_mirna, replace=False)] += 1
        pool = np.repeat(np.arange(n_mirna), counts)
    return rng.permutation(pool)


def _member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """``np.isin`` for a sorted set, by binary search (much faster here than isin's hashing)."""
    if sorted_set.size == 0:
        return np.zeros(keys.shape, bool)
    at = np.minimum(np.searchsorted(sorted_set, keys), sorted_set.size - 1)
    return sorted_set[at] == keys


def _invalid(keys: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Slots holding a known positive, or repeating a pair an earlier slot holds."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    repeat = np.zeros(keys.size, bool)
    repeat[order[1:]] = ordered[1:] == ordered[:-1]
    return repeat | _member(keys, known)


def _swap_until_valid(rng: np.random.Generator, slot_targets: np.ndarray, chosen: np.ndarray,
                      n_mirna: int, known: np.ndarray) -> np.ndarray:
    """Swap the miRNAs of invalid slots with those of random valid slots, in rounds.

    A swap is made only when both new pairs are neither known positives nor
    pairs already present. Swaps keep the multiset of miRNAs, hence their
    shares. Returns the mask of slots still invalid (none, unless the shares
    cannot be met, e.g. a miRNA needing more slots than there are sites free for it).
    """
    stalled, fewest = 0, np.inf
    for _ in range(_SWAP_ROUNDS):
        keys = _pair_keys(slot_targets, chosen, n_mirna)
        bad = _invalid(keys, known)
        n_bad = int(bad.sum())
        stalled = stalled + 1 if n_bad > 0.99 * fewest else 0
        fewest = min(fewest, n_bad)
        if n_bad == 0 or stalled >= _STALLED_ROUNDS:
            break
        slots = np.flatnonzero(bad)
        # several candidate partners per invalid slot: the last few invalid slots rarely fit the first
        partners = rng.integers(0, keys.size, size=(slots.size, _PARTNERS))
        new_slot = _pair_keys(slot_targets[slots, None], chosen[partners], n_mirna)
        new_partner = _pair_keys(slot_targets[partners], chosen[slots, None], n_mirna)
        present = np.sort(np.concatenate([keys, known]))
        ok = ~bad[partners] & ~_member(new_slot, present) & ~_member(new_partner, present)
        has = np.flatnonzero(ok.any(axis=1))
        partner = partners[has, ok[has].argmax(axis=1)]
        # a valid slot may be picked as partner twice in a round: swap it once
        _, first = np.unique(partner, return_index=True)
        a, b = slots[has[first]], partner[first]
        chosen[a], chosen[b] = chosen[b], chosen[a].copy()
    return _invalid(_pair_keys(slot_targets, chosen, n_mirna), known)


def _refill(rng: np.random.Generator, slot_targets: np.ndarray, chosen: np.ndarray, bad: np.ndarray,
            n_mirna: int, known: np.ndarray) -> None:
    """Give the slots swapping could not fix any miRNA their site is free for, site by site.

    Draws follow the current miRNA shares, so the shares move as little as
    possible. Only reached when the exact shares are impossible; the loop
    runs over the affected sites, not over slots.
    """
    shares = np.bincount(chosen, minlength=n_mirna).astype(np.float64)
    kept_keys = np.sort(_pair_keys(slot_targets[~bad], chosen[~bad], n_mirna))
    taken = np.union1d(known, kept_keys)
    open_slots = np.flatnonzero(bad)
    open_slots = open_slots[np.argsort(slot_targets[open_slots], kind="stable")]
    site_of_slot = slot_targets[open_slots]
    starts = np.flatnonzero(np.r_[True, site_of_slot[1:] != site_of_slot[:-1]])
    for target, slots in zip(site_of_slot[starts], np.split(open_slots, starts[1:])):
        lo, hi = np.searchsorted(taken, [target * n_mirna, (target + 1) * n_mirna])
        allowed = np.setdiff1d(np.arange(n_mirna), taken[lo:hi] - target * n_mirna)
        weights = shares[allowed] + 1e-12  # a miRNA absent so far may still be needed
        chosen[slots] = rng.choice(allowed, size=slots.size, replace=False, p=weights / weights.sum())


def repair_negatives(
    targets: Sequence[str] | np.ndarray | pd.Series,
    mirnas: Sequence[str] | np.ndarray | pd.Series,
    ratio: int = 1,
    *,
    mode: str = "frequency",
    seed: int = 0,
    known_positives: tuple[Sequence[str], Sequence[str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Negative pairs: each positive's target site re-paired ``ratio`` times with other miRNAs.

    Parameters
    ----------
    targets, mirnas : sequences of str, same length N
        The positive pairs (target site, miRNA).
    ratio : int
        Negatives per positive (whole number >= 1); N * ratio negatives are made.
    mode : {"frequency", "uniform"}
        Distribution of the negatives' miRNAs: as among the positives, or
        every distinct miRNA equally.
    seed : int
        Same seed, same negatives.
    known_positives : (targets, mirnas), optional
        Further positive pairs that must not be produced (e.g. a validation
        set's); the positives themselves are always excluded.

    Returns
    -------
    (targets, mirnas) : two object arrays of str, length N * ratio
        Negative ``k`` of positive ``i`` is at index ``i * ratio + k``.

    Raises
    ------
    UserError
        Bad ratio or mode, no positives, or a target site with too few
        miRNAs it is not known to pair with.
    """
    is_number = isinstance(ratio, (int, float, np.integer, np.floating)) and not isinstance(ratio, bool)
    if not (is_number and float(ratio).is_integer() and ratio >= 1):
        raise UserError(f"negative ratio must be a whole number >= 1, got {ratio!r}")
    ratio = int(ratio)
    if mode not in MODES:
        raise UserError(f"unknown negative mode {mode!r}; choose {' or '.join(MODES)}")
    if len(targets) != len(mirnas):
        raise UserError(f"{len(targets)} target sites but {len(mirnas)} miRNAs; give one of each per positive")
    if len(targets) == 0:
        raise UserError("no positive pairs to re-pair; the table needs rows with label 1")

    target_ids, target_names, target_keys = _factorize(targets)
    mirna_ids, mirna_names, mirna_keys = _factorize(mirnas)
    n_mirna = len(mirna_names)
    known = np.union1d(_pair_keys(target_ids, mirna_ids, n_mirna),
                       _known_keys(known_positives, target_keys, mirna_keys))
    _check_feasible(target_ids, known, n_mirna, ratio, target_names)

    rng = np.random.default_rng(seed)
    slot_targets = np.repeat(target_ids, ratio)
    chosen = _balanced_pool(mirna_ids, n_mirna, slot_targets.size, ratio, mode, rng)
    bad = _swap_until_valid(rng, slot_targets, chosen, n_mirna, known)
    if bad.any():
        _refill(rng, slot_targets, chosen, bad, n_mirna, known)
    return target_names[slot_targets], mirna_names[chosen]


def make_negatives_table(
    frame: pd.DataFrame,
    *,
    target_col: str = "seq_a",
    mirna_col: str = "seq_b",
    ratio: int = 1,
    mode: str = "frequency",
    seed: int = 0,
    label_col: str | None = "label",
    known_positives: pd.DataFrame | None = None,
    source: str = "<table>",
) -> pd.DataFrame:
    """A table of re-paired negatives for the positives of ``frame``.

    Parameters
    ----------
    frame : pandas.DataFrame
        Pair table (as read by :func:`itertrain.io.read_table`). When it has
        ``label_col``, its rows labelled 1 are the positives; otherwise every
        row is a positive.
    target_col, mirna_col : str
        Sequence columns; the known conventions (``gene``/``miRNA``, ...) are
        recognised when the defaults are absent.
    ratio, mode, seed
        As in :func:`repair_negatives`.
    label_col : str or None
        Name of the 0/1 label column, read when present and written in the result.
    known_positives : pandas.DataFrame, optional
        More positive pairs to avoid, with the same column names.
    source : str
        Name of the table, for messages.

    Returns
    -------
    pandas.DataFrame
        The two sequence columns (in ``frame``'s order) and ``label_col``
        (``"label"`` when None) set to 0.
    """
    col_t, col_m = resolve_columns(frame, target_col, mirna_col, source)
    positives = frame
    if label_col is not None and label_col in frame.columns:
        positives = frame[parse_labels(frame[label_col], source, label_col) == 1]
    if len(positives) == 0:
        raise UserError(f"{source}: no rows labelled 1 in column {label_col!r}; "
                        "negatives are made from the positives")
    known = None
    if known_positives is not None:
        kt, km = resolve_columns(known_positives, target_col, mirna_col, "known positives")
        known = (known_positives[kt], known_positives[km])
    neg_t, neg_m = repair_negatives(positives[col_t], positives[col_m], ratio, mode=mode, seed=seed,
                                    known_positives=known)
    columns = [c for c in frame.columns if c in (col_t, col_m)]
    result = pd.DataFrame({col_t: neg_t, col_m: neg_m})[columns]
    result[label_col or "label"] = 0
    return result

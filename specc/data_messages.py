"""The messages of the validation pass: one line per kind of problem and column, with the first place it occurs."""
from __future__ import annotations


def describe(found, plans: dict, where) -> list[str]:
    """`found`: the pass's findings (specc.data_findings.Findings); `plans`: the columns' plans by name, in
    order; `where((file, row))` names a row."""
    def each(kind: dict):   # in the order of the columns, whichever part of the data found what first
        return [(name, kind[name]) for name in plans if name in kind]

    out = [f"column {name!r}: {count} null value(s) (first in {where(at)}); fill or drop them"
           for name, (count, at) in each(found.nulls)]
    for name, (count, lo, hi, at) in each(found.out_of_range):
        card = plans[name].cardinality
        out.append(f"column {name!r}: {count} value(s) outside [0, {card}) (min seen {lo}, max seen {hi}; first in "
                   f"{where(at)}); ids must be < the schema's cardinality (int_domain.max + 1 = {card}): fix the "
                   "schema's int_domain.max or re-encode the ids (data prepared after a run, with its catalog grown "
                   "by --categories, need a model that knows the new ids: train one with --init-from the run)")
    for name, (count, lo, hi, at) in each(found.out_of_domain):
        seen = ", ".join(dict.fromkeys(map(_number, (lo, hi))))
        if plans[name].binary:
            out.append(f"column {name!r}: {count} value(s) that are not 0 or 1 (e.g. {seen}; first in {where(at)}); "
                       "a binary column (binary_classification or bool) holds only 0 and 1: fix the data or the "
                       "schema")
        else:
            a, b = plans[name].domain
            out.append(f"column {name!r}: {count} value(s) outside int_domain [{a}, {b}] (e.g. {seen}; first in "
                       f"{where(at)}); fix the data or the schema")
    out += [f"column {name!r}: {count} NaN/inf value(s) (first in {where(at)}); fill or drop them"
            for name, (count, at) in each(found.non_finite)]
    if found.ragged[0]:
        count, at, lengths = found.ragged
        shown = ", ".join(f"{k!r} has {v}" for k, v in lengths.items())
        out.append(f"{count} row(s) whose list columns differ in length (first: {where(at)}: {shown}); "
                   "the list columns of one row must describe the same interactions")
    if found.zero_inside[0]:
        count, at = found.zero_inside
        out.append(f"column {found.item_column!r}: id 0 (padding) inside {count} sequence(s) (first: {where(at)}); "
                   "item ids start at 1 — shift 0-based ids by 1 or re-encode")
    return out


def _number(v) -> str:
    """A value for a message: 2 rather than 2.0, 0.1 rather than 0.10000000149011612."""
    return str(int(v)) if float(v).is_integer() else f"{float(v):g}"

#!/usr/bin/env python3
"""Compares one kosoku (Autobahn) run with its committed expected outcomes.

    compare.py EXPECTED_FILE REPORT_DIR            check a run; exit 1 on any difference
    compare.py EXPECTED_FILE REPORT_DIR --same-framing-as OTHER_REPORT_DIR
                                                   and also require, case by case, the close
                                                   verdict, close code and pings and pongs of
                                                   the other run (except where this run's
                                                   close verdict is not passing)
    compare.py EXPECTED_FILE REPORT_DIR --subset   check a run of some of the cases: a case
                                                   that did not run is not a difference
    compare.py --write EXPECTED_FILE REPORT_DIR    rewrite EXPECTED_FILE from a run,
                                                   keeping the reasons already written

An expected file has one line per case, in case order:

    <case id> <behavior> <close behavior> <close code or -> [<reason>]

<behavior> and <close behavior> are kosoku's verdicts (Autobahn's labels, with
the space in "WRONG CODE" or "FAILED BY CLIENT" written as "_"); the close code
is the one the relay sent. A case whose verdicts are not both among OK,
NON-STRICT and INFORMATIONAL must give its reason; every other case may. Lines
starting with `#` and blank lines are comments.

The run fails on any case that appears, disappears or changes (either verdict or
the close code), and on an expected line that is not passing and has no reason.
"""

import json
import sys
from collections import Counter
from pathlib import Path

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def case_order(case_id):
    return [int(part) for part in case_id.split(".")]


def read_run(report_dir):
    """{case id: (behavior, close behavior, close code)} from kosoku's index.json."""
    index = json.loads((Path(report_dir) / "index.json").read_text())
    if len(index) != 1:
        sys.exit(f"{report_dir}/index.json: expected one agent, found {len(index)}")
    (cases,) = index.values()
    return {
        case: (
            entry["behavior"].replace(" ", "_"),
            entry["behaviorClose"].replace(" ", "_"),
            "-" if entry["remoteCloseCode"] is None else str(entry["remoteCloseCode"]),
        )
        for case, entry in cases.items()
    }


def control_frames(report_dir, case):
    """The pings and pongs a case received, in order."""
    index = json.loads((Path(report_dir) / "index.json").read_text())
    (cases,) = index.values()
    report = json.loads((Path(report_dir) / cases[case]["reportfile"]).read_text())
    return [event for event in report["received"] if event[0] in ("ping", "pong")]


def framing_differences(run, report_dir, other_dir):
    """Cases where this run's close or control frames differ from the other run's."""
    other = read_run(other_dir)
    problems = []
    for case in sorted(set(run) & set(other), key=case_order):
        if run[case][1] not in PASSING:
            continue
        if run[case][1:] != other[case][1:]:
            problems.append(
                f"{case}: close {' '.join(run[case][1:])}, "
                f"but {' '.join(other[case][1:])} in {other_dir}"
            )
        elif control_frames(report_dir, case) != control_frames(other_dir, case):
            problems.append(f"{case}: pings and pongs differ from {other_dir}")
    return problems


def read_expected(path):
    """({case id: outcome}, {case id: reason}) from an expected file."""
    outcomes, reasons = {}, {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(maxsplit=4)
        if len(fields) < 4:
            sys.exit(f"{path}:{number}: expected `id behavior close code [reason]`")
        case = fields[0]
        if case in outcomes:
            sys.exit(f"{path}:{number}: case {case} listed twice")
        outcomes[case] = tuple(fields[1:4])
        if len(fields) == 5:
            reasons[case] = fields[4]
    return outcomes, reasons


def passing(outcome):
    return outcome[0] in PASSING and outcome[1] in PASSING


def counts(run):
    by_outcome = Counter(f"{b}/{c}" for b, c, _ in run.values())
    return ", ".join(f"{n} {o}" for o, n in sorted(by_outcome.items(), key=lambda x: -x[1]))


def write(path, run):
    old_reasons = read_expected(path)[1] if Path(path).exists() else {}
    header = [
        line
        for line in (Path(path).read_text().splitlines() if Path(path).exists() else [])
        if line.startswith("#")
    ]
    lines = header[:]
    for case in sorted(run, key=case_order):
        fields = [case, *run[case]]
        if case in old_reasons:
            fields.append(old_reasons[case])
        elif not passing(run[case]):
            fields.append("TODO: why")
        lines.append(" ".join(fields))
    Path(path).write_text("\n".join(lines) + "\n")
    print(f"wrote {len(run)} cases to {path}: {counts(run)}")


def check(path, report_dir, other_dir=None, subset=False):
    run = read_run(report_dir)
    expected, reasons = read_expected(path)
    problems = []
    for case in sorted(set(run) | set(expected), key=case_order):
        got, want = run.get(case), expected.get(case)
        if want is None:
            problems.append(f"{case}: new case {' '.join(got)}")
        elif got is None and subset:
            continue
        elif got is None:
            problems.append(f"{case}: expected {' '.join(want)}, but it did not run")
        elif got != want:
            problems.append(f"{case}: expected {' '.join(want)}, got {' '.join(got)}")
        if want is not None and not passing(want) and case not in reasons:
            problems.append(f"{case}: expected {' '.join(want)} has no reason in {path}")
    if other_dir is not None:
        problems += framing_differences(run, report_dir, other_dir)
    name = Path(path).name
    print(f"{name}: {len(run)} cases: {counts(run)}")
    if problems:
        print(f"{name}: {len(problems)} differences from the expected outcomes:")
        for problem in problems:
            print(f"  {problem}")
        print(f"(the reports are in {report_dir}/index.html)")
        return False
    listed = sum(1 for case in run if not passing(run[case]))
    print(f"{name}: every case as expected ({listed} not passing, each with its reason)")
    if other_dir is not None:
        print(f"{name}: closes, close codes, pings and pongs as in {other_dir}")
    return True


def main(args):
    if args[:1] == ["--write"] and len(args) == 3:
        write(args[1], read_run(args[2]))
    elif len(args) == 2:
        sys.exit(0 if check(*args) else 1)
    elif len(args) == 3 and args[2] == "--subset":
        sys.exit(0 if check(args[0], args[1], subset=True) else 1)
    elif len(args) == 4 and args[2] == "--same-framing-as":
        sys.exit(0 if check(args[0], args[1], args[3]) else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

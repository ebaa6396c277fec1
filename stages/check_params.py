"""check_params: validate every section of params.yaml before any other stage runs.

DVC removes a stage's outputs just before it reruns the stage, so a bad value caught only by the
stage that reads it would already have cost that stage's outputs. This stage sits at the head of
the DAG: it reruns on any parameter change and fails first. Its output never changes while the
parameters are valid, so it triggers nothing downstream.

Checks that need the data (``cluster.k`` above the training samples, a split the data lacks) are
made here too when the prepared folder on disk is the one these params make; it is read, not a
dependency: it only adds refusals, and the stages that read it check again.
"""

import argparse
from pathlib import Path

from imageclust.cli import run_stage
from imageclust.data.prepared import META_FILE
from imageclust.io import read_json
from imageclust.schema import check_across_sections, check_against_prepared, load_all


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="marker written when the parameters are valid")
    parser.add_argument("--prepared", type=Path, help="the download stage's folder, when it exists: data checks")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, sections = load_all(args.params)
    check_across_sections(sections)
    if args.prepared is not None and (args.prepared / META_FILE).is_file():
        check_against_prepared(read_json(args.prepared / META_FILE), gparams, sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("params.yaml is valid\n")


if __name__ == "__main__":
    run_stage(main, build_parser())

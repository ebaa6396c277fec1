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
from imageclust.config import SECTIONS, check_across_sections, check_against_prepared, load_params
from imageclust.data.prepared import META_FILE
from imageclust.io import read_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="marker written when the parameters are valid")
    parser.add_argument("--prepared", type=Path, help="the download stage's folder, when it exists: data checks")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, *sections = load_params(*SECTIONS, path=args.params)
    named = dict(zip(SECTIONS, sections))
    check_across_sections(named["extract"], named["finetune"])
    if args.prepared is not None and (args.prepared / META_FILE).is_file():
        check_against_prepared(read_json(args.prepared / META_FILE), gparams, named["data"], named["cluster"],
                               named["evaluate"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("params.yaml is valid\n")


if __name__ == "__main__":
    run_stage(main, build_parser())

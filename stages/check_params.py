"""check_params: validate every section of params.yaml before any other stage runs.

DVC removes a stage's outputs just before it reruns the stage, so a bad value caught only by the
stage that reads it would already have cost that stage's outputs. This stage sits at the head of
the DAG: it reruns on any parameter change and fails first. Its output never changes while the
parameters are valid, so it triggers nothing downstream.
"""

import argparse
from pathlib import Path

from imageclust.cli import run_stage
from imageclust.config import SECTIONS, check_across_sections, load_params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="marker written when the parameters are valid")
    return parser


def main(args: argparse.Namespace) -> None:
    _, *sections = load_params(*SECTIONS, path=args.params)
    named = dict(zip(SECTIONS, sections))
    check_across_sections(named["extract"], named["finetune"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("params.yaml is valid\n")


if __name__ == "__main__":
    run_stage(main, build_parser())

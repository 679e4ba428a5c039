#!/usr/bin/env python
"""Write verl-format parquet files (logic in rpo_verl/data/); prints the paths written.

  python scripts/prepare_data.py arith [--n-train 2048 --n-val 256 --seed 0 --steps 1 --max-operand 9]
      -> ~/.cache/rpo_verl/data/arith/{train,val}.parquet
  python scripts/prepare_data.py arith --style reasoning     # long-chain task: 1-3 additions, step by step
      -> ~/.cache/rpo_verl/data/arith_reasoning/{train,val}.parquet
  python scripts/prepare_data.py gsm8k --input ~/datasets/gsm8k --split train [--split test]
      -> ~/.cache/rpo_verl/data/gsm8k/train.parquet   (also: math, dapo, math500, aime24, amc23)
  python scripts/prepare_data.py check FILE.parquet [FILE ...]    # validate existing verl files

--input takes a datasets.save_to_disk folder, parquet/json/jsonl files or a folder of them.
Malformed rows are listed with file and row and stop the run; --skip-bad leaves them out (counted).
RPO_VERL_CACHE moves the cache root; --out picks the folder.
"""

import argparse
import sys
from pathlib import Path

from rpo_verl.data import DATASETS, ArithConfig, BadRowsError, check_files, convert_dataset, default_data_dir
from rpo_verl.data import prepare_arith, write_parquet
from rpo_verl.data.arith import task_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("arith", help="synthetic arithmetic word problems (data_source rpo_verl/arith)")
    a.add_argument("--n-train", type=int, default=2048)
    a.add_argument("--n-val", type=int, default=256)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--style", choices=("oneline", "reasoning"), default="oneline",
                   help="oneline: one-line answer with the expression given (default); reasoning: step-by-step "
                   "chain ending 'Final answer: N', 1-3 additions per problem unless --steps/--steps-max/--ops say")
    a.add_argument("--steps", type=int, default=None, help="operations per problem (oneline: 1, reasoning: 1)")
    a.add_argument("--steps-max", type=int, default=None,
                   help="difficulty mix: operations drawn uniformly from steps..steps-max (reasoning: 3)")
    a.add_argument("--min-operand", type=int, default=ArithConfig.min_operand)
    a.add_argument("--max-operand", type=int, default=ArithConfig.max_operand)
    a.add_argument("--ops", default=None, help="comma list of add,sub,mul (default: add)")
    a.add_argument("--question", choices=("word", "bare"), default=None,
                   help="word: the story (default); bare: only 'What is <expr>?'")
    a.add_argument("--instruction", default=None, help="instruction template after the question ({name}, {item}, {expr})")
    a.add_argument("--plain", action="store_true", help="harder prompt: do not show the expression to complete")
    a.add_argument("--out", type=Path, default=None)
    for name, spec in DATASETS.items():
        c = sub.add_parser(name, help=f"convert a local copy of {spec.data_source}")
        c.add_argument("--input", required=True, type=Path, help="local dataset folder or file")
        c.add_argument("--split", action="append", default=None, help="split(s) to convert (repeatable)")
        c.add_argument("--out", type=Path, default=None)
        c.add_argument("--skip-bad", action="store_true", help="leave malformed rows out (counted)")
        c.add_argument("--keep-duplicates", action="store_true", help="keep identical (prompt, answer) rows")
    k = sub.add_parser("check", help="validate existing verl parquet files")
    k.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()

    try:
        if args.command == "arith":
            cfg = task_config(args.style, args.plain, steps=args.steps, steps_max=args.steps_max,
                              min_operand=args.min_operand, max_operand=args.max_operand,
                              ops=tuple(args.ops.split(",")) if args.ops else None, question=args.question,
                              instruction=args.instruction)
            out = args.out or (default_data_dir("arith_reasoning") if args.style == "reasoning" else None)
            for path in prepare_arith(out, args.n_train, args.n_val, args.seed, cfg).values():
                print(path)
        elif args.command == "check":
            for path, report in check_files(args.files).items():
                print(f"{path}: {len(report.good)} rows OK")
        else:
            out = args.out or default_data_dir(args.command)
            for split in args.split or [None]:
                result = convert_dataset(args.command, args.input, split, args.skip_bad, args.keep_duplicates)
                label = split or DATASETS[args.command].default_split
                for problem in result.problems:
                    print(f"skipped {problem}", file=sys.stderr)
                print(f"[prepare_data] {args.command}/{label}: {result.summary()}", file=sys.stderr)
                print(write_parquet(result.rows, out / f"{label}.parquet"))
    except (BadRowsError, ValueError, FileNotFoundError) as exc:
        print(f"prepare_data: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

